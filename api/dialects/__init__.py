"""The seed platforms' wire formats, one module each, served under /compat/<name>."""

from api.dialects import bunce, cocomail, emailsendx, esputnik

DIALECTS = (cocomail, esputnik, bunce, emailsendx)
