"""An esputnik event whose template uses the Velocity its template guide teaches, rendered by the running worker."""

import pytest
from sqlalchemy.orm import Session, sessionmaker

from tests.support.builders import Tenant, make_automation, make_template, make_tenant, workspace_spec
from tests.support.esputnik_requests import basic, post
from tests.support.polling import wait_until
from tests.support.smtp_sink import Sink

# The rendering does not depend on the database: one backend is enough.
pytestmark = pytest.mark.parametrize("backend", ["sqlite"], indirect=True, scope="session")

TEXT = """\
Hello $!data.get('name'),
#set($total = 0)
#foreach($item in $data.get('array'))
  #if($item.get('price') > 1000 && $item.get('brand') != '')
$velocityCount. $item.get('name') by $item.get('brand') (premium)
  #elseif($item.get('price') lt 100 or !$item.get('brand'))
$velocityCount. $item.get('name') (bargain)
  #else
$velocityCount. $item.get('name')
  #end
#set($total = $total + $item.get('qty'))
#end
$!data.get('array').size() lines, $total pieces$!data.get('missing')
"""
SUBJECT = "#if($data.get('array').size() == 1)One item#{else}$data.get('array').size() items#end waiting"
HTML = (
    "<ul><!-- #foreach($item in $data.get('array')) --><li>$!item.get('name')</li>"
    "<!-- #if($foreach.hasNext) --><hr><!-- #end --><!-- #end --></ul>"
)


@pytest.fixture
def velocity_shop(db: sessionmaker[Session]) -> Tenant:
    spec = workspace_spec(
        "espvm",
        templates=[make_template("cart", SUBJECT, TEXT, html=HTML, syntax="velocity", data_param="items")],
        automations=[make_automation("Cart", "cart", trigger="abandoned_cart")],
    )
    return make_tenant(db, spec)


def test_a_cart_template_with_conditions_loops_counters_and_locals_reaches_the_sink(
    api_url: str, velocity_shop: Tenant, sink: Sink
) -> None:
    items = {
        "name": "Ann",
        "array": [
            {"name": "Styler", "price": "341", "brand": "Le Petit Olivier", "qty": 2},
            {"name": "Magnolia Nobile", "price": "2341", "brand": "Acqua Di Parma", "qty": 1},
            {"name": "Soap & Co", "price": "40", "brand": "", "qty": 3},
        ],
    }
    body = {
        "eventTypeKey": "abandoned_cart",
        "keyValue": "velocity-cart-1",
        "params": [{"name": "email", "value": "vm@example.com"}, {"name": "items", "value": items}],
    }

    response = post(api_url, basic(velocity_shop.token), body)

    assert response.status_code == 200, response.text
    [mail] = wait_until(lambda: sink.to("vm@example.com", sender=velocity_shop.sender), what="the cart email")
    assert mail.message["Subject"] == "3 items waiting"
    text = mail.message.get_body(("plain",))
    assert text is not None
    assert text.get_content().splitlines() == [
        "Hello Ann,",
        "1. Styler",
        "2. Magnolia Nobile by Acqua Di Parma (premium)",
        "3. Soap & Co (bargain)",
        "3 lines, 6 pieces",
    ]
    html = mail.message.get_body(("html",))
    assert html is not None
    assert html.get_content().strip() == (
        "<ul><li>Styler</li><hr><li>Magnolia Nobile</li><hr><li>Soap &amp; Co</li></ul>"
    )
