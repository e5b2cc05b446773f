//! Time in the browser: the monotonic clock every input to the node is stamped with, a
//! one-shot timer (`setTimeout`) cancelled when dropped, and the secure random seed.

use js_sys::{Function, Reflect};
use wasm_bindgen::prelude::Closure;
use wasm_bindgen::{JsCast, JsValue};

/// Calls a closure once after `delay` milliseconds, unless dropped first.
pub(crate) struct Timeout {
    id: JsValue,
    _callback: Closure<dyn FnMut()>,
}

impl Timeout {
    pub(crate) fn start(delay: i32, fire: impl FnOnce() + 'static) -> Result<Self, JsValue> {
        let mut fire = Some(fire);
        let callback = Closure::<dyn FnMut()>::new(move || {
            if let Some(fire) = fire.take() {
                fire();
            }
        });
        let id = global_function("setTimeout")?.call2(
            &JsValue::NULL,
            callback.as_ref(),
            &delay.into(),
        )?;
        Ok(Self {
            id,
            _callback: callback,
        })
    }
}

impl Drop for Timeout {
    fn drop(&mut self) {
        if let Ok(clear) = global_function("clearTimeout") {
            let _ = clear.call1(&JsValue::NULL, &self.id);
        }
    }
}

/// 32 bytes from the platform's cryptographically secure generator
/// (`crypto.getRandomValues`).
pub(crate) fn random_seed() -> Result<[u8; 32], JsValue> {
    let crypto = Reflect::get(&js_sys::global(), &"crypto".into())?;
    let fill = Reflect::get(&crypto, &"getRandomValues".into())?.dyn_into::<Function>()?;
    let bytes = js_sys::Uint8Array::new_with_length(32);
    fill.call1(&crypto, &bytes)?;
    let mut seed = [0u8; 32];
    bytes.copy_to(&mut seed);
    Ok(seed)
}

/// Milliseconds on the page's monotonic clock (`performance.now()`), which, unlike
/// `Date.now()`, never jumps when the system clock is set.
pub(crate) fn now_ms() -> u64 {
    let performance = Reflect::get(&js_sys::global(), &"performance".into()).ok();
    let now = performance.and_then(|p| {
        let now = Reflect::get(&p, &"now".into())
            .ok()?
            .dyn_into::<Function>()
            .ok()?;
        now.call0(&p).ok()?.as_f64()
    });
    // Every page and worker has `performance`; the wall clock is a fallback that works.
    now.unwrap_or_else(js_sys::Date::now) as u64
}

fn global_function(name: &str) -> Result<Function, JsValue> {
    Reflect::get(&js_sys::global(), &name.into())?.dyn_into::<Function>()
}
