"""The seed platforms' wire formats, one module each, served under /compat/<name>."""

from api.dialects import altcraft, bunce, cocomail, emailsendx, esputnik

DIALECTS = (cocomail, altcraft, esputnik, bunce, emailsendx)
