//! Any text must parse to a Dockerfile or a typed error, never a panic; whatever parses must
//! survive the other entry points too (dump, lint, expansion with an empty environment).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(tree) = forge_parser::ast::parse(text) {
        let _ = tree.dump();
        for node in &tree.children {
            // Spans must stay inside the source.
            assert!(node.span.start <= node.span.end && node.span.end <= text.len(), "span out of range");
            assert!(text.is_char_boundary(node.span.start) && text.is_char_boundary(node.span.end));
        }
    }
    let _ = forge_parser::lint(text);
    if let Ok(df) = forge_parser::parse_dockerfile(text) {
        let lex = forge_parser::shell::Lexer::new(df.directives.escape);
        let env: Vec<(String, String)> = Vec::new();
        for stage in &df.stages {
            for ins in &stage.instructions {
                let _ = ins.kind.expand(&lex, &env);
            }
        }
    }
    if let Err(e) = forge_parser::parse_dockerfile(text) {
        let _ = e.render("Dockerfile", text);
    }
});
