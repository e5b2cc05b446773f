//! A repeating timer (`setInterval`) that stops when dropped.

use js_sys::{Function, Reflect};
use wasm_bindgen::prelude::Closure;
use wasm_bindgen::{JsCast, JsValue};

/// Calls a closure every `period` milliseconds until dropped.
pub(crate) struct Ticker {
    id: JsValue,
    _callback: Closure<dyn FnMut()>,
}

fn global_function(name: &str) -> Result<Function, JsValue> {
    Reflect::get(&js_sys::global(), &name.into())?.dyn_into::<Function>()
}

impl Ticker {
    pub(crate) fn start(period: i32, tick: impl FnMut() + 'static) -> Result<Self, JsValue> {
        let callback = Closure::<dyn FnMut()>::new(tick);
        let id = global_function("setInterval")?.call2(
            &JsValue::NULL,
            callback.as_ref(),
            &period.into(),
        )?;
        Ok(Self {
            id,
            _callback: callback,
        })
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        if let Ok(clear) = global_function("clearInterval") {
            let _ = clear.call1(&JsValue::NULL, &self.id);
        }
    }
}
