//! Hydrate entry: cargo-leptos compiles this crate to WASM and calls `hydrate()`.
// The content page's view type is deep (tachys builds one type per view tree); laying it
// out for hydration goes past the default 128 (the app crate says the same).
#![recursion_limit = "256"]

#[wasm_bindgen::prelude::wasm_bindgen]
pub fn hydrate() {
    console_error_panic_hook::set_once();
    leptos::mount::hydrate_body(app::App);
}
