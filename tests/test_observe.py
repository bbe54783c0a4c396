"""What the sidecar reads from a request as a campaign touch (edge/observe.py)."""

from __future__ import annotations

from edge.observe import Observer
from edge.request import RequestHead

NOW = 1_790_000_000


def head(query: bytes = b"", **headers: bytes) -> RequestHead:
    return RequestHead(
        "GET",
        "/c/scarpe",
        query=query,
        headers=[(name.replace("_", "-").encode(), value) for name, value in headers.items()],
    )


def test_a_landing_campaign_is_a_touch() -> None:
    touch = Observer().touch(
        head(b"utm_source=newsletter&utm_medium=email&utm_campaign=saldi", host=b"shop.example"),
        NOW,
    )
    assert touch is not None and touch.ts == NOW
    assert (touch.source, touch.medium, touch.campaign) == ("newsletter", "email", "saldi")
    assert touch.channel == "email"


def test_the_shop_s_own_pages_are_no_touch() -> None:
    observer = Observer()
    for referer, host in [
        (b"https://shop.example/", b"shop.example"),
        (b"http://127.0.0.1:8000/p/borsa", b"127.0.0.1:8000"),
        (b"https://www.shop.example/c/x", b"shop.example"),  # a subdomain of the shop
        (b"https://SHOP.example/", b"shop.example:443"),
        (b"http://[::1]:8000/", b"[::1]:8000"),
    ]:
        assert observer.touch(head(host=host, referer=referer), NOW) is None, referer
    # behind a proxy the public host may be in X-Forwarded-Host, or in public_url
    forwarded = head(
        host=b"10.0.0.7:8000", x_forwarded_host=b"shop.example", referer=b"https://shop.example/"
    )
    assert observer.touch(forwarded, NOW) is None
    public = Observer(shop_host="shop.example")
    assert public.touch(head(host=b"10.0.0.7:8000", referer=b"https://shop.example/"), NOW) is None


def test_other_sites_are_touches() -> None:
    observer = Observer()
    google = observer.touch(head(host=b"shop.example", referer=b"https://www.google.com/"), NOW)
    assert google is not None and google.channel == "search" and google.referrer == "www.google.com"
    blog = observer.touch(head(host=b"shop.example", referer=b"https://myshop.example.org/"), NOW)
    assert blog is not None and blog.channel == "referral"
    # a look-alike is not the shop
    evil = observer.touch(head(host=b"shop.example", referer=b"https://evilshop.example/"), NOW)
    assert evil is not None and evil.channel == "referral"
    # the campaign wins over the referrer's channel, on the shop's own page too
    tagged = observer.touch(
        head(
            b"utm_medium=cpc&utm_campaign=bf",
            host=b"shop.example",
            referer=b"https://shop.example/",
        ),
        NOW,
    )
    assert tagged is not None and (tagged.campaign, tagged.channel, tagged.referrer) == (
        "bf",
        "paid",
        "",
    )
    assert observer.touch(head(host=b"shop.example", referer=b"http://[broken"), NOW) is None


def test_a_page_without_referrer_or_campaign_is_no_touch() -> None:
    assert Observer().touch(head(b"page=2", host=b"shop.example"), NOW) is None


def test_webmail_referrers_are_email_not_search() -> None:
    observer = Observer()
    for webmail in [
        b"https://mail.google.com/mail/u/0/",
        b"https://mail.yahoo.com/d/folders/1",
        b"https://outlook.live.com/mail/0/inbox",
        b"https://outlook.office365.com/mail/",
        b"https://webmail.aruba.it/",
        b"https://mail.proton.me/u/0/inbox",
    ]:
        touch = observer.touch(head(host=b"shop.example", referer=webmail), NOW)
        assert touch is not None and touch.channel == "email", webmail
    # the search engines on the same domains stay search; a blog about mail is a referral
    for referer, expected in [
        (b"https://www.google.com/", "search"),
        (b"https://search.yahoo.com/search?p=scarpe", "search"),
        (b"https://www.bing.com/", "search"),
        (b"https://mailchimp-fans.example.org/", "referral"),
    ]:
        touch = observer.touch(head(host=b"shop.example", referer=referer), NOW)
        assert touch is not None and touch.channel == expected, referer


def test_a_product_view_is_recorded_whatever_the_one_capture_is_called() -> None:
    from edge.pages import Page
    from edge.profiles import events as ev

    observer = Observer()
    events = observer.page_events(Page("product", {"id": "borsa-tessa"}), "/p/borsa-tessa", "")
    assert [e.product_id for e in events if isinstance(e, ev.ProductViewed)] == ["borsa-tessa"]
    events = observer.page_events(Page("category", {"slug": "scarpe"}), "/c/scarpe", "")
    assert [e.category for e in events if isinstance(e, ev.ProductListViewed)] == ["scarpe"]
