//! A well-formed component for another world: `validate` must refuse it as a wrong world.

wit_bindgen::generate!({
    inline: "
        package test:other;

        world other {
            export hello: func() -> string;
        }
    ",
});

/// Implements the unrelated world.
struct Other;

impl Guest for Other {
    fn hello() -> String {
        "not a filter".to_owned()
    }
}

export!(Other);
