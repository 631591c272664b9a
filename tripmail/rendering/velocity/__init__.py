"""The Velocity subset esputnik's templates use (its trigger document and template guide), translated to Jinja once, at
apply time, so that it renders in the same bounded sandbox as every other template.

Supported: references `$name`, `$!name`, `${name}`, `$!{name}` with `.get('key')`, `.get(0)` and `.property`
chains, ending in `.size()` if need be; `#foreach($item in <reference>) ... #end` with its counter `$velocityCount`
(and `$foreach.count`, `.index`, `.hasNext`, `.first`, `.last`) and `#break`; `#if(...)`, `#elseif(...)`, `#else`,
`#end`; `#set($name = ...)`; `## comments` and `#* comments *#`. Conditions and `#set` take references, 'text',
numbers, true, false and parentheses, with `==` `!=` `>` `<` `>=` `<=` (or `eq` `ne` `gt` `lt` `ge` `le`), `&&`
`||` `!` (or `and` `or` `not`) and `+` `-` `*` `/` `%`. A directive alone in an HTML comment (`<!-- #if($x) -->`,
as esputnik's editor keeps them) is that directive, and the comment is not shown.

As in Velocity: a quiet reference (`$!`) with no value renders empty and a plain one renders as written; `#end`
outside a block is plain text; a line holding only a directive leaves no line behind; names are case-sensitive
and start with a letter; `#set` changes the name for the rest of the render, loops included; `==` compares two
numbers as numbers and anything else as text (`341 == '341'`); an `#if` is false on a missing, false, empty or
zero value. Data arrives from JSON, where numbers are often text: `<`, `>`, `<=`, `>=` read text that is a
number as that number, and are false for anything else that is not a number. Arithmetic takes numbers only and
is nothing otherwise, except that `+` with text on either side joins both as text.
Any other directive, method or value is refused with its line, rather than rendered wrong.
"""
