//! The relay's tests, over a plain TCP echo server on 127.0.0.1.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::mpsc::{self, Receiver};

use super::pipes::ACCEPT_POLL;
use super::*;

/// How long any one wait in these tests may take.
const BOUND: Duration = Duration::from_secs(10);

#[test]
fn relays_bytes_intact_and_counts_them() {
    // Without a delay one thread copies each way; with one, a reader and a writer do.
    for delay in [Duration::ZERO, Duration::from_millis(5)] {
        round_trip_megabyte(delay);
    }
}

#[test]
fn delay_holds_each_chunk_in_each_direction() {
    let (echo_port, _) = echo_server();
    let relay = Relay::start(echo_port, Duration::from_millis(25)).unwrap();
    let mut client = connect(relay.port());
    let started = Instant::now();
    for round in 0..5u8 {
        client.write_all(&[round]).unwrap();
        let mut answer = [0];
        client.read_exact(&mut answer).unwrap();
        assert_eq!(answer, [round]);
    }
    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_millis(250), "5 round trips took {elapsed:?}, less than 5 x 2 x 25 ms");
    assert!(elapsed < Duration::from_secs(2), "5 round trips took {elapsed:?}");
    assert_eq!((relay.bytes_to_target(), relay.bytes_from_target()), (5, 5));
}

#[test]
fn a_frozen_relay_carries_nothing_and_closes_nothing_until_it_thaws() {
    for delay in [Duration::ZERO, Duration::from_millis(5)] {
        let (echo_port, _) = echo_server();
        let relay = Relay::start(echo_port, delay).unwrap();
        let mut client = connect(relay.port());
        client.write_all(b"a").unwrap();
        client.read_exact(&mut [0]).unwrap();
        relay.freeze();
        client.write_all(b"b").unwrap();
        client.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
        let frozen = client.read(&mut [0]);
        let timed_out =
            matches!(&frozen, Err(err) if matches!(err.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut));
        assert!(timed_out, "nothing comes back, and nothing is closed, while frozen ({delay:?}): {frozen:?}");
        relay.thaw();
        client.set_read_timeout(Some(BOUND)).unwrap();
        let mut answer = [0];
        client.read_exact(&mut answer).unwrap();
        assert_eq!(&answer, b"b", "what was held passes once thawed ({delay:?})");
    }
}

#[test]
fn counts_one_turn_per_answer_and_none_for_what_the_server_says_unasked() {
    for delay in [Duration::ZERO, Duration::from_millis(5)] {
        let (echo_port, _) = greeting_echo_server(b"hello");
        let relay = Relay::start(echo_port, delay).unwrap();
        let mut client = connect(relay.port());
        let mut greeting = [0; 5];
        client.read_exact(&mut greeting).unwrap();
        assert_eq!((&greeting, relay.turns()), (b"hello", 0), "the greeting came unasked ({delay:?})");
        for round in 0..7u8 {
            client.write_all(&[round; 3]).unwrap();
            let mut answer = [0; 3];
            client.read_exact(&mut answer).unwrap();
            assert_eq!(answer, [round; 3]);
        }
        assert_eq!(relay.turns(), 7, "7 questions, each answered before the next ({delay:?})");
        assert_eq!(relay.connections(), 1);

        relay.reset();
        assert_eq!((relay.turns(), relay.connections()), (0, 0));
        client.write_all(b"ab").unwrap();
        client.read_exact(&mut [0; 2]).unwrap();
        assert_eq!(relay.turns(), 1, "one more after a reset ({delay:?})");
    }
}

#[test]
fn drop_closes_the_port_and_every_connection() {
    let (echo_port, echo_report) = echo_server();
    let relay = Relay::start(echo_port, Duration::from_millis(25)).unwrap();
    let port = relay.port();
    let mut client = connect(port);
    client.write_all(b"ping").unwrap();
    client.read_exact(&mut [0; 4]).unwrap();

    // Dropped on another thread, so that a Drop that hangs fails the test instead.
    let (dropped, done) = mpsc::channel();
    thread::spawn(move || {
        drop(relay);
        let _ = dropped.send(());
    });
    done.recv_timeout(BOUND).expect("dropping the relay did not return");
    let refused = TcpStream::connect_timeout(&SocketAddr::from((Ipv4Addr::LOCALHOST, port)), BOUND);
    assert!(refused.is_err(), "the relay's port `{port}` still accepts connections after Drop");
    let echoed = echo_report.recv_timeout(BOUND).expect("the echo server's connection stays open");
    assert_eq!(echoed.unwrap(), 4);
    assert_eq!(client.read(&mut [0; 16]).unwrap(), 0, "the client's connection stays open after Drop");
}

/// Sends 1 MiB of pseudo-random bytes through a relay with `delay` to an echo server, then
/// checks what comes back and what the relay counted.
fn round_trip_megabyte(delay: Duration) {
    let (echo_port, echo_report) = echo_server();
    let relay = Relay::start(echo_port, delay).unwrap();
    let mut client = connect(relay.port());
    client.write_all(b"warm-up").unwrap();
    client.read_exact(&mut [0; 7]).unwrap();
    relay.reset();
    assert_eq!((relay.bytes_to_target(), relay.bytes_from_target()), (0, 0));

    let sent = pseudo_random(1 << 20);
    // Written from another thread while this one reads, or both sides' buffers fill up.
    let writer = thread::spawn({
        let mut client = client.try_clone().unwrap();
        let sent = sent.clone();
        move || {
            client.write_all(&sent).unwrap();
            // The end of the stream must reach the echo server for it to end its side.
            client.shutdown(Shutdown::Write).unwrap();
        }
    });
    let mut received = Vec::new();
    client.read_to_end(&mut received).unwrap();
    writer.join().unwrap();

    assert!(received == sent, "{} bytes came back, not the {} sent ({delay:?})", received.len(), sent.len());
    let echoed = echo_report.recv_timeout(BOUND).expect("the echo server did not see the end of the stream");
    assert_eq!(echoed.unwrap(), 7 + sent.len() as u64);
    assert_eq!((relay.bytes_to_target(), relay.bytes_from_target()), (sent.len() as u64, sent.len() as u64));
}

/// Starts a server on 127.0.0.1 that echoes one connection until its end of stream, then
/// ends its own side and reports how many bytes it echoed. Returns its port and the report.
fn echo_server() -> (u16, Receiver<io::Result<u64>>) {
    greeting_echo_server(b"")
}

/// Like [`echo_server`], writing `greeting` first, unasked, as an SSH server sends its banner.
fn greeting_echo_server(greeting: &'static [u8]) -> (u16, Receiver<io::Result<u64>>) {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    listener.set_nonblocking(true).unwrap();
    let (sender, finished) = mpsc::channel();
    thread::spawn(move || {
        let deadline = Instant::now() + BOUND;
        let accepted = loop {
            match listener.accept() {
                Err(_) if Instant::now() < deadline => thread::sleep(ACCEPT_POLL),
                accepted => break accepted,
            }
        };
        let echoed = accepted.and_then(|(stream, _)| {
            stream.set_nonblocking(false)?;
            stream.set_read_timeout(Some(BOUND))?;
            (&stream).write_all(greeting)?;
            let echoed = io::copy(&mut &stream, &mut &stream);
            let _ = stream.shutdown(Shutdown::Write);
            echoed
        });
        let _ = sender.send(echoed);
    });
    (port, finished)
}

/// A connection to 127.0.0.1:`port` whose reads and writes give up after [`BOUND`].
fn connect(port: u16) -> TcpStream {
    let stream = TcpStream::connect_timeout(&SocketAddr::from((Ipv4Addr::LOCALHOST, port)), BOUND).unwrap();
    stream.set_read_timeout(Some(BOUND)).unwrap();
    stream.set_write_timeout(Some(BOUND)).unwrap();
    stream
}

/// `len` bytes that look random (the top byte of each index times a large odd number): no
/// pattern a bug could keep by accident.
fn pseudo_random(len: usize) -> Vec<u8> {
    (0..len as u64).map(|i| (i.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 56) as u8).collect()
}
