fn main() {
    std::process::exit(reverb_receive::main_with_args(std::env::args_os()))
}
