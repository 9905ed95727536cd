fn main() {
    std::process::exit(reverb_index::main_with_args(std::env::args_os()))
}
