"""How a field value sent with a trigger meets the contact's stored value: the SPEC's options 0, 1 and 2.

A leaf module: the canonical schemas, the dialects and the contact upsert all read it.
"""

from enum import IntEnum


class FieldOption(IntEnum):
    """0 stores the value only into an empty field, 1 shows it in this message only, 2 always stores it."""

    IF_EMPTY = 0
    MESSAGE_ONLY = 1
    ALWAYS = 2

    # Validation errors list the options as the wire gives them: "0, 1 or 2".
    def __repr__(self) -> str:
        return repr(self.value)

    @property
    def stores(self) -> bool:
        """Whether the value may go into the contact (into an empty field only, unless it overwrites)."""
        return self is not FieldOption.MESSAGE_ONLY

    @property
    def overwrites(self) -> bool:
        """Whether the value goes into the contact over one already stored."""
        return self is FieldOption.ALWAYS

    @property
    def shows(self) -> bool:
        """Whether the message shows the value sent rather than the stored one."""
        return self is not FieldOption.IF_EMPTY
