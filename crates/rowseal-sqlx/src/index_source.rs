//! [`IndexSource`]: how a field's value becomes the text a blind index
//! covers. The one definition both the generated code (through the trait)
//! and the dynamic codec ([`crate::encoding::DecodedValue::index_text`],
//! [`crate::Value::index_text`]) use.

/// A field type a blind index can cover: its value as text (before
/// normalization), or `None` for NULL.
pub trait IndexSource {
    /// The text indexed.
    fn index_str(&self) -> Option<std::borrow::Cow<'_, str>>;
}

impl IndexSource for String {
    fn index_str(&self) -> Option<std::borrow::Cow<'_, str>> {
        Some(std::borrow::Cow::Borrowed(self))
    }
}

impl IndexSource for Box<str> {
    fn index_str(&self) -> Option<std::borrow::Cow<'_, str>> {
        Some(std::borrow::Cow::Borrowed(self))
    }
}

impl<T: IndexSource> IndexSource for Option<T> {
    fn index_str(&self) -> Option<std::borrow::Cow<'_, str>> {
        self.as_ref().and_then(IndexSource::index_str)
    }
}

macro_rules! index_source_display {
    ($($t:ty),*) => {$(
        impl IndexSource for $t {
            fn index_str(&self) -> Option<std::borrow::Cow<'_, str>> {
                Some(std::borrow::Cow::Owned(self.to_string()))
            }
        }
    )*};
}
index_source_display!(i16, i32, i64, u16, u32, u64, char);
