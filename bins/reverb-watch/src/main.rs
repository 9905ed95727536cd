fn main() {
    std::process::exit(reverb_watch::main_with_args(std::env::args_os()))
}
