fn main() {
    println!("trailwatch");
}
