//! Named choices: enums whose every variant has one canonical name (and
//! optional aliases), declared once. The names drive parsing (`FromStr`,
//! with an error listing the choices), printing (`Display`), serde (as
//! strings) and the lists shown in help texts, so a list of accepted values
//! can never disagree with the parser.

/// A type with a fixed set of named values.
pub trait Choice: Sized + Copy + 'static {
    /// Every value, in declaration order.
    const ALL: &'static [Self];
    /// The canonical name of a value.
    fn name(self) -> &'static str;
    /// The other names a value is accepted under.
    fn aliases(self) -> &'static [&'static str];
    /// The value called `s` (canonical name or alias).
    fn from_name(s: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|v| v.name() == s || v.aliases().contains(&s))
    }
    /// The canonical names joined by " | " (for help texts).
    fn names() -> String {
        Self::ALL.iter().map(|v| v.name()).collect::<Vec<_>>().join(" | ")
    }
}

/// The error for a name that is not one of `T`'s (`what` names the option).
pub fn unknown<T: Choice>(what: &str, s: &str) -> crate::Error {
    crate::error::config_err(
        what,
        s,
        format!("expected one of {}", T::ALL.iter().map(|v| v.name()).collect::<Vec<_>>().join(", ")),
    )
}

/// Declares an enum of named choices:
///
/// ```
/// recurrent::choice! {
///     /// What to do.
///     pub enum Mode ("mode") {
///         /// Go fast.
///         Fast = "fast" | "quick",
///         /// Go slowly.
///         Slow = "slow",
///     }
/// }
/// assert_eq!("quick".parse::<Mode>().unwrap(), Mode::Fast);
/// assert_eq!(Mode::Slow.to_string(), "slow");
/// assert!("medium".parse::<Mode>().unwrap_err().to_string().contains("fast, slow"));
/// ```
///
/// The string after the enum's name names the option in parse errors.
#[macro_export]
macro_rules! choice {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident ($what:literal) {
            $( $(#[$vmeta:meta])* $variant:ident = $canon:literal $(| $alias:literal)* ),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        $vis enum $name {
            $( $(#[$vmeta])* $variant, )+
        }

        impl $crate::choice::Choice for $name {
            const ALL: &'static [Self] = &[$($name::$variant),+];
            fn name(self) -> &'static str {
                match self { $($name::$variant => $canon),+ }
            }
            fn aliases(self) -> &'static [&'static str] {
                match self { $($name::$variant => &[$($alias),*]),+ }
            }
        }

        impl ::std::str::FromStr for $name {
            type Err = $crate::Error;
            fn from_str(s: &str) -> $crate::Result<Self> {
                <Self as $crate::choice::Choice>::from_name(s).ok_or_else(|| $crate::choice::unknown::<Self>($what, s))
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str($crate::choice::Choice::name(*self))
            }
        }

        impl $crate::__serde::Serialize for $name {
            fn serialize<S: $crate::__serde::Serializer>(&self, s: S) -> ::std::result::Result<S::Ok, S::Error> {
                s.serialize_str($crate::choice::Choice::name(*self))
            }
        }

        impl<'de> $crate::__serde::Deserialize<'de> for $name {
            fn deserialize<D: $crate::__serde::Deserializer<'de>>(d: D) -> ::std::result::Result<Self, D::Error> {
                let s = <::std::borrow::Cow<'de, str> as $crate::__serde::Deserialize>::deserialize(d)?;
                s.parse().map_err(|e: $crate::Error| <D::Error as $crate::__serde::de::Error>::custom(
                    match e { $crate::Error::Config { value, reason, .. } => format!("{value:?}: {reason}"), e => e.to_string() }
                ))
            }
        }
    };
}
