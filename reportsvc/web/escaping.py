"""Pages that show what UTF-8 cannot encode are sent with it escaped, never as a 500."""

from reportsvc.text import escaped


class EscapeUnencodableTextMiddleware:
    """Rendered pages (the admin's, the API's) whose text UTF-8 cannot encode are sent
    with those characters written as escapes (``\\ud800``).

    A lone surrogate, e.g. from a JSON ``"\\ud800"`` escape that SQLite stored before
    values were checked, reaches a page as text that cannot be encoded: Django's
    encoding of the rendered page failed, and the page answered 500 for as long as the
    row existed. Pages are rendered here as the handler would next; only when encoding
    fails is the page rendered again and sent escaped.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_template_response(self, request, response):
        try:
            return response.render()
        except UnicodeEncodeError:
            content = response.rendered_content
            if not isinstance(content, str):
                raise
            response.content = escaped(content)
            return response
