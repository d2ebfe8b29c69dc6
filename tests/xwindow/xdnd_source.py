"""A real XDND drag source: a small GTK window that drags one file (as text/uri-list).

Run with Debian's python3 (python3-gi, gir1.2-gtk-3.0), not the project's venv:
``/usr/bin/python3 xdnd_source.py FILE X Y``. The window (a button labelled "drag me")
appears at (X, Y) on the screen; the test drags from it with xdotool, and the X server
carries the drop to whichever window is under the pointer, through the XDND protocol.
Prints "ready" once mapped and "sent" when the target took the data.
"""

import sys

import gi

gi.require_version("Gtk", "3.0")
gi.require_version("Gdk", "3.0")
from gi.repository import Gdk, GLib, Gtk  # noqa: E402

path, x, y = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
uri = GLib.filename_to_uri(path, None)

window = Gtk.Window(title="xdnd-source")
window.set_decorated(False)
window.set_default_size(120, 60)
window.move(x, y)
button = Gtk.Button(label="drag me")
window.add(button)
targets = [Gtk.TargetEntry.new("text/uri-list", 0, 0)]
button.drag_source_set(Gdk.ModifierType.BUTTON1_MASK, targets, Gdk.DragAction.COPY)


def on_get(_widget, _context, data, _info, _time):
    data.set_uris([uri])
    print("sent", flush=True)


def on_end(_widget, _context):
    GLib.timeout_add(500, Gtk.main_quit)


button.connect("drag-data-get", on_get)
button.connect("drag-end", on_end)
window.connect("destroy", Gtk.main_quit)
window.show_all()
GLib.timeout_add(300, lambda: print("ready", flush=True) and False)
GLib.timeout_add(60000, Gtk.main_quit)
Gtk.main()
