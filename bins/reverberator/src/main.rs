fn main() {
    std::process::exit(reverberator::main_with_args(std::env::args_os()))
}
