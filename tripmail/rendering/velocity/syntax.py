"""How the Velocity subset is written: the patterns that find its directives, references and comments."""

import re

_NAME = r"[A-Za-z][A-Za-z0-9_]*"
SIZE = r"\.size\(\s*\)"
_STEP = r"""\.get\(\s*(?:'[^'\\]*'|"[^"\\]*"|\d+)\s*\)|\.(?!size\(\s*\))[A-Za-z_][A-Za-z0-9_]*"""
REFERENCE = re.compile(
    rf"\$!?(?:\{{(?P<formal>{_NAME}(?:{_STEP})*(?:{SIZE})?)\}}|(?P<informal>{_NAME}(?:{_STEP})*(?:{SIZE})?))"
)
FOREACH = re.compile(rf"#\{{?foreach\}}?\s*\(\s*\$!?\{{?(?P<var>{_NAME})\}}?\s+in\s+")
IF = re.compile(r"#\{?(?P<word>if|elseif)\}?\s*\(")
ELSE = re.compile(r"#(?:\{else\}|else(?![A-Za-z0-9_]))")
SET = re.compile(rf"#\{{?set\}}?\s*\(\s*\$!?\{{?(?P<var>{_NAME})\}}?\s*=")
SET_NAMES = re.compile(rf"#\{{?set\}}?\s*\(\s*\$!?\{{?(?P<var>{_NAME})")
CLOSE = re.compile(r"\s*\)")
END = re.compile(r"#(?:\{end\}|end(?![A-Za-z0-9_]))")
BREAK = re.compile(r"#(?:\{break\}|break(?![A-Za-z0-9_(]))")
LINE_COMMENT = re.compile(r"##[^\r\n]*(?:\r?\n)?")
BLOCK_COMMENT = re.compile(r"#\*.*?\*#", re.DOTALL)
OTHER_DIRECTIVE = re.compile(
    r"#\{?(?P<word>if|elseif|else|set|foreach|macro|parse|include|define|evaluate|break|stop)\b"
)
COMMENT_OPEN = re.compile(r"<!--[ \t]*(?=#)")
COMMENT_CLOSE = re.compile(r"[ \t]*-->")
GET = re.compile(r"""\.get\(\s*(?:'(?P<single>[^'\\]*)'|"(?P<double>[^"\\]*)"|(?P<index>\d+))\s*\)""")
# How each supported directive is written, for one that is not.
FORMS = {
    "foreach": "#foreach($item in $reference)",
    "if": "#if(condition)",
    "elseif": "#elseif(condition)",
    "set": "#set($name = value)",
}
