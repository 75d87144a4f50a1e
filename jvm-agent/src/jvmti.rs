//! JVMTI through the types bindgen made from the JDK's `jvmti.h`, with the
//! few calls the agent makes wrapped so each checks its error code.

#[allow(non_upper_case_globals, non_camel_case_types, non_snake_case, dead_code, missing_docs, clippy::all)]
pub mod sys {
    include!(concat!(env!("OUT_DIR"), "/jvmti.rs"));
}

use std::ffi::{c_char, c_void, CStr, CString};
use sys::*;

/// A JVMTI call that failed, with its error number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JvmtiError {
    /// The call.
    pub call: &'static str,
    /// `jvmtiError`.
    pub code: u32,
}

impl std::fmt::Display for JvmtiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "JVMTI {} failed with error {}", self.call, self.code)
    }
}

impl std::error::Error for JvmtiError {}

macro_rules! call {
    ($env:expr, $f:ident $(, $a:expr)*) => {{
        let env = $env;
        // SAFETY: `env` is a live JVMTI environment; its function table is filled by the JVM.
        let code = unsafe { ((**env).$f.expect(stringify!($f)))(env $(, $a)*) };
        if code == 0 { Ok(()) } else { Err(JvmtiError { call: stringify!($f), code }) }
    }};
}

/// A JVMTI environment (valid for the JVM's lifetime; usable from any thread).
#[derive(Debug, Clone, Copy)]
pub struct Jvmti(pub *mut jvmtiEnv);

// SAFETY: JVMTI environments may be used from any thread (JVMTI spec, "Environments").
unsafe impl Send for Jvmti {}
// SAFETY: as above.
unsafe impl Sync for Jvmti {}

impl Jvmti {
    /// The JVMTI environment of `vm`.
    ///
    /// # Safety
    /// `vm` must be the JavaVM the JVM passed to the agent.
    pub unsafe fn of(vm: *mut JavaVM) -> Result<Jvmti, JvmtiError> {
        let mut env: *mut c_void = std::ptr::null_mut();
        let code = ((**vm).GetEnv.expect("GetEnv"))(vm, &mut env, JVMTI_VERSION_9 as jint);
        if code != 0 || env.is_null() {
            return Err(JvmtiError { call: "GetEnv", code: code as u32 });
        }
        Ok(Jvmti(env as *mut jvmtiEnv))
    }

    /// Asks for the capabilities class-file instrumentation needs.
    pub fn add_capabilities(&self) -> Result<(), JvmtiError> {
        let mut caps = jvmtiCapabilities::default();
        caps.set_can_generate_all_class_hook_events(1);
        caps.set_can_retransform_classes(1);
        call!(self.0, AddCapabilities, &caps)
    }

    /// Installs the event callbacks.
    pub fn set_callbacks(&self, callbacks: &jvmtiEventCallbacks) -> Result<(), JvmtiError> {
        call!(self.0, SetEventCallbacks, callbacks, std::mem::size_of::<jvmtiEventCallbacks>() as jint)
    }

    /// Turns an event on for every thread.
    pub fn enable(&self, event: jvmtiEvent) -> Result<(), JvmtiError> {
        call!(self.0, SetEventNotificationMode, jvmtiEventMode_JVMTI_ENABLE, event, std::ptr::null_mut())
    }

    /// A system property (`java.vm.version`…).
    pub fn property(&self, name: &str) -> Option<String> {
        let name = CString::new(name).ok()?;
        let mut value: *mut c_char = std::ptr::null_mut();
        call!(self.0, GetSystemProperty, name.as_ptr(), &mut value).ok()?;
        // SAFETY: JVMTI returned a NUL-terminated modified-UTF-8 string it allocated.
        let s = unsafe { CStr::from_ptr(value) }.to_string_lossy().into_owned();
        self.free(value as *mut u8);
        Some(s)
    }

    /// Copies `bytes` into memory the JVM owns (for new class bytes).
    pub fn allocate_copy(&self, bytes: &[u8]) -> Result<*mut u8, JvmtiError> {
        let mut mem: *mut u8 = std::ptr::null_mut();
        call!(self.0, Allocate, bytes.len() as jlong, &mut mem)?;
        // SAFETY: `mem` has room for `bytes.len()` bytes.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), mem, bytes.len()) };
        Ok(mem)
    }

    fn free(&self, mem: *mut u8) {
        let _ = call!(self.0, Deallocate, mem);
    }

    /// Lets `module` read `other` (so java.base may call the agent's class).
    pub fn add_module_reads(&self, module: jobject, other: jobject) -> Result<(), JvmtiError> {
        call!(self.0, AddModuleReads, module, other)
    }

    /// Every loaded class whose signature (`Lpkg/Name;`) `wanted` accepts.
    pub fn loaded_classes(&self, wanted: impl Fn(&str) -> bool) -> Result<Vec<jclass>, JvmtiError> {
        let mut count: jint = 0;
        let mut classes: *mut jclass = std::ptr::null_mut();
        call!(self.0, GetLoadedClasses, &mut count, &mut classes)?;
        let mut out = Vec::new();
        for i in 0..count as usize {
            // SAFETY: JVMTI returned `count` class references.
            let c = unsafe { *classes.add(i) };
            let mut sig: *mut c_char = std::ptr::null_mut();
            if call!(self.0, GetClassSignature, c, &mut sig, std::ptr::null_mut()).is_ok() && !sig.is_null() {
                // SAFETY: a NUL-terminated string JVMTI allocated.
                let s = unsafe { CStr::from_ptr(sig) }.to_string_lossy().into_owned();
                self.free(sig as *mut u8);
                if wanted(&s) {
                    out.push(c);
                }
            }
        }
        self.free(classes as *mut u8);
        Ok(out)
    }

    /// Runs the class-file hook again on loaded classes.
    pub fn retransform(&self, classes: &[jclass]) -> Result<(), JvmtiError> {
        if classes.is_empty() {
            return Ok(());
        }
        call!(self.0, RetransformClasses, classes.len() as jint, classes.as_ptr())
    }
}
