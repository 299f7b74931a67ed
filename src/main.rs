use pest::Parser;
fn main() {
    let path = std::env::args().nth(1).unwrap();
    let text = std::fs::read_to_string(path).unwrap();
    let mut pos = 0;
    loop {
        let rest = &text[pos..];
        if flowc::grammar::FlowGrammar::parse(flowc::grammar::Rule::trailing, rest).is_ok() { break; }
        match flowc::grammar::FlowGrammar::parse(flowc::grammar::Rule::item_only, rest) {
            Ok(mut p) => { let it = p.next().unwrap(); println!("{:?} {}..{}", it.as_rule(), pos+it.as_span().start(), pos+it.as_span().end()); pos += it.as_span().end(); }
            Err(e) => { println!("{}", e); break; }
        }
    }
}
