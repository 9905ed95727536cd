fn main() {
    std::process::exit(reverb_mountwatch::main_with_args(std::env::args_os()))
}
