//! A value borrowed from a model-cache slot for one task: [`Leased`] derefs to the value and,
//! when dropped, puts it back into its [`Slot`] for the next task of the process. Used for
//! models whose weights live inside their layers (FLUX.1 Kontext), where sharing the weights
//! between two live models is not possible: one task at a time holds the loaded model, and a
//! second concurrent task of the same process gets a slot of its own.

use std::sync::Mutex;

/// A cache entry holding one value, or nothing while a task holds it.
#[derive(Debug)]
pub struct Slot<T> {
    value: Mutex<Option<T>>,
    bytes: u64,
}

impl<T> Slot<T> {
    /// A slot holding `value`, which holds `bytes`.
    pub fn new(value: T, bytes: u64) -> Slot<T> {
        Slot {
            value: Mutex::new(Some(value)),
            bytes,
        }
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The value, unless a task holds it now.
    pub fn take(&self) -> Option<T> {
        self.value.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    fn put(&self, value: T) {
        *self.value.lock().unwrap_or_else(|p| p.into_inner()) = Some(value);
    }
}

/// A value owned by one task, returned to its slot (if it came from one) when dropped.
#[derive(Debug)]
pub struct Leased<T> {
    value: Option<T>,
    slot: Option<std::sync::Arc<Slot<T>>>,
}

impl<T> Leased<T> {
    /// A value of this task alone (dropped with it).
    pub fn owned(value: T) -> Leased<T> {
        Leased {
            value: Some(value),
            slot: None,
        }
    }

    /// A value taken from `slot` (see [`Slot::take`]), returned on drop.
    pub fn from_slot(value: T, slot: std::sync::Arc<Slot<T>>) -> Leased<T> {
        Leased {
            value: Some(value),
            slot: Some(slot),
        }
    }

    /// Whether the value goes back to a cache slot when dropped.
    pub fn is_cached(&self) -> bool {
        self.slot.is_some()
    }
}

impl<T> std::ops::Deref for Leased<T> {
    type Target = T;
    fn deref(&self) -> &T {
        self.value.as_ref().expect("present until dropped")
    }
}

impl<T> std::ops::DerefMut for Leased<T> {
    fn deref_mut(&mut self) -> &mut T {
        self.value.as_mut().expect("present until dropped")
    }
}

impl<T> Drop for Leased<T> {
    fn drop(&mut self) {
        if let (Some(v), Some(slot)) = (self.value.take(), self.slot.take()) {
            slot.put(v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn a_leased_value_returns_to_its_slot() {
        let slot = Arc::new(Slot::new(vec![1, 2], 8));
        let v = slot.take().unwrap();
        assert!(slot.take().is_none(), "held by the lease");
        let mut l = Leased::from_slot(v, slot.clone());
        l.push(3);
        assert!(l.is_cached());
        drop(l);
        assert_eq!(slot.take(), Some(vec![1, 2, 3]));
        let o = Leased::owned(5);
        assert_eq!(*o, 5);
        assert!(!o.is_cached());
    }
}
