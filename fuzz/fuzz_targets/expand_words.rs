//! Word expansion must never panic: any word, any escape character, a small environment.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let (escape, word) = match text.strip_prefix('`') {
        Some(rest) => ('`', rest),
        None => ('\\', text),
    };
    let env = vec![
        ("A".to_string(), "a b".to_string()),
        ("EMPTY".to_string(), String::new()),
        ("PAT".to_string(), "*x?".to_string()),
    ];
    let lex = forge_parser::shell::Lexer::new(escape);
    let _ = lex.process_word(word, &env);
    let _ = lex.process_words(word, &env);
    let _ = lex.process_word_with_matches(word, &env);
    let raw = forge_parser::shell::Lexer::new(escape).raw_quotes(true).raw_escapes(true).skip_unset_env(true);
    let _ = raw.process_words(word, &env);
});
