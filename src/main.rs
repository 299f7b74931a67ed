fn main() {
    let path = std::env::args().nth(1).unwrap();
    let text = String::from_utf8_lossy(&std::fs::read(path).unwrap()).to_string();
    let (m, d) = flowc::parser::parse(flowc::source::FileId(0), &text);
    println!("{} items", m.items.len());
    for x in d { println!("{} {:?}", x.message, x.span); }
}
