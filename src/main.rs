fn main() {
    println!("oxinvr {}", env!("CARGO_PKG_VERSION"));
}
