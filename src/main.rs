fn main() {
    std::process::exit(runner::main());
}
