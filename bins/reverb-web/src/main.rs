fn main() {
    std::process::exit(reverb_web::main_with_args(std::env::args_os()))
}
