"""
The published payload: an Atom entry of about 2 KB, like one photo of the Flickr firehose.
"""

from __future__ import annotations

_TEXT = (
    "Evening light over the harbour, taken from the old lighthouse at the end of the pier. "
    "The fishing boats had just come in and the gulls were following them, so I waited for "
    "the moment the last boat crossed the line of the breakwater. Shot handheld at 1/250 s, "
    "f/8, ISO 200; no crop, a little warmth added in development. More from this walk in the "
    "set &quot;Coastline&quot;; prints on request. "
)


def atomEntry(index: int) -> str:
    """
    The Atom entry of item C{index} (title, links, author, categories, XHTML content).

    Its length varies by a few bytes with C{index}; L{ENTRY_BYTES} is that of item 0. The
    entry never contains the benchmark's item id, so counting ids counts notifications.
    """
    return (
        "<entry xmlns='http://www.w3.org/2005/Atom'>"
        f"<id>tag:photos.example.org,2026:photo/{7_300_000 + index}</id>"
        f"<title>Harbour at dusk #{index}</title>"
        "<updated>2026-11-22T18:04:11Z</updated><published>2026-11-22T18:04:11Z</published>"
        "<author><name>Jane Photographer</name><uri>https://photos.example.org/people/jane/</uri>"
        "</author>"
        f"<link rel='alternate' type='text/html' href='https://photos.example.org/jane/{index}/'/>"
        f"<link rel='enclosure' type='image/jpeg' length='2491822' "
        f"href='https://farm.photos.example.org/65535/{index}_a1b2c3d4_o.jpg'/>"
        f"<link rel='preview' type='image/jpeg' href='https://farm.photos.example.org/65535/{index}_a1b2c3d4_m.jpg'/>"
        "<category term='harbour' scheme='https://photos.example.org/tags/'/>"
        "<category term='dusk' scheme='https://photos.example.org/tags/'/>"
        "<category term='boats' scheme='https://photos.example.org/tags/'/>"
        "<category term='seascape' scheme='https://photos.example.org/tags/'/>"
        "<content type='xhtml'><div xmlns='http://www.w3.org/1999/xhtml'>"
        f"<p><a href='https://photos.example.org/jane/{index}/'>"
        f"<img src='https://farm.photos.example.org/65535/{index}_a1b2c3d4_m.jpg' width='240' "
        "height='160' alt='Harbour at dusk'/></a></p>"
        f"<p>{_TEXT}</p><p>{_TEXT}</p><p>{_TEXT[:100]}</p>"
        "</div></content></entry>"
    )


ENTRY_BYTES = len(atomEntry(0).encode())
