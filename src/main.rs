fn main() {
    println!("memprune");
}
