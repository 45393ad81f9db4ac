"""
Per-subscription XSLT transforms, run with lxml and denied file and network access.
"""

from __future__ import annotations

from lxml import etree

from hermod_component.replication.codec import PARSER


class TransformError(ValueError):
    """
    The stylesheet failed on an item, or produced no document.
    """


class Transform:
    """
    One compiled stylesheet.
    """

    def __init__(self, path: str) -> None:
        """
        @param path: The XSLT file, read and compiled now.
        @raise etree.XSLTParseError: The stylesheet is not valid XSLT.
        """
        self.path = path
        access = etree.XSLTAccessControl.DENY_ALL
        with open(path, "rb") as f:
            document = etree.fromstring(f.read(), PARSER)
        self._xslt = etree.XSLT(document, access_control=access)

    def __call__(self, payload: bytes) -> bytes:
        """
        The transformed item payload.

        @raise TransformError: The stylesheet failed or gave no element.
        """
        try:
            result = self._xslt(etree.fromstring(payload, PARSER))
        except (etree.XSLTApplyError, etree.XMLSyntaxError) as e:
            raise TransformError(f"transform {self.path} failed: {e}") from None
        root = result.getroot()
        if root is None:
            raise TransformError(f"transform {self.path} produced no element")
        return bytes(etree.tostring(root))
