"""Tour sections: one module per section (or a few related ones), each using ``@section``.

Every module in this package is imported by :func:`calcml.tour.load_sections`; a new section
is one new module here and nothing else.
"""
