fn main() {
    std::process::exit(reverb_retire::main_with_args(std::env::args_os()))
}
