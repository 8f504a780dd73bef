//! Prints the Vapi `endedReason` mapping as Markdown, for the crate README:
//! `cargo run -p clarion-providers --example mapping_table`.

fn main() {
    print!("{}", clarion_providers::vapi::mapping::markdown_table());
}
