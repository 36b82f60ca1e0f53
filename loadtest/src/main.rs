fn main() {
    eprintln!("trailwatch-loadtest: not yet implemented (issue 9)");
    std::process::exit(2);
}
