fn main() {
    std::process::exit(reverb_restore::main_with_args(std::env::args_os()))
}
