fn main() {
    std::process::exit(reverb_snap::main_with_args(std::env::args_os()))
}
