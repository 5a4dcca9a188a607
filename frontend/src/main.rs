fn main() {
    println!("forge");
}
