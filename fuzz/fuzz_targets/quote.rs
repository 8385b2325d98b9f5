//! Shell quoting on arbitrary strings: a POSIX shell word-splitter reads every quoted value back
//! as exactly one word, the value itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use xtask_deploy::shell::quote;

fuzz_target!(|value: &str| {
    let quoted = quote(value);
    if value.contains('\0') {
        assert_eq!(quoted, "''", "a NUL must fail closed");
        return;
    }
    let words = shlex::split(&quoted).expect("a quoted value always parses");
    assert_eq!(words, vec![value.to_string()]);
    // Glued to other text, it is still one word: nothing leaks out of the quotes.
    let words = shlex::split(&format!("x{quoted}y")).expect("parses");
    assert_eq!(words, vec![format!("x{value}y")]);
});
