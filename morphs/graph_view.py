"""GraphView: a dialogue graph drawn from its nodes and edges (the graph behind
``get_graph().draw_mermaid()``), in layers from ``__start__``; the node that ran last, the
node that runs next and the breakpoints are highlighted."""

from __future__ import annotations

from typing import Any

from kivy.graphics import Color, Ellipse, Line, RoundedRectangle
from kivy.properties import ListProperty, StringProperty
from kivy.uix.label import Label
from kivy.uix.widget import Widget

from shared_api.dialogue import GraphEdge

NODE_W, NODE_H = 74, 24
IDLE = (0.22, 0.26, 0.33)
RAN = (0.25, 0.45, 0.7)
NEXT = (0.85, 0.7, 0.25)
BREAK = (0.9, 0.3, 0.3)


def layers(nodes: list[str], edges: list[GraphEdge]) -> list[list[str]]:
    """Nodes by distance from ``__start__`` (breadth first; back edges ignored)."""
    out: dict[str, list[str]] = {}
    for edge in edges:
        out.setdefault(edge.source, []).append(edge.target)
    depth = {"__start__": 0}
    frontier = ["__start__"]
    while frontier:
        nxt = []
        for node in frontier:
            for target in out.get(node, []):
                if target not in depth:
                    depth[target] = depth[node] + 1
                    nxt.append(target)
        frontier = nxt
    for node in nodes:
        depth.setdefault(node, max(depth.values()) + 1)
    rows: list[list[str]] = [[] for _ in range(max(depth.values()) + 1)]
    for node, d in sorted(depth.items(), key=lambda item: (item[1], item[0])):
        rows[d].append(node)
    return rows


class GraphView(Widget):
    #: the node that ran last, and the one that runs next
    current = StringProperty("")
    upcoming = StringProperty("")
    breakpoints = ListProperty([])

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.nodes: list[str] = []
        self.edges: list[GraphEdge] = []
        self.centers: dict[str, tuple[float, float]] = {}
        self._labels: dict[str, Label] = {}
        self.bind(
            pos=self.redraw,
            size=self.redraw,
            current=self.redraw,
            upcoming=self.redraw,
            breakpoints=self.redraw,
        )

    def set_graph(self, nodes: list[str], edges: list[GraphEdge]) -> None:
        self.nodes, self.edges = list(nodes), list(edges)
        for label in self._labels.values():
            self.remove_widget(label)
        self._labels = {}
        for node in ["__start__", *self.nodes, "__end__"]:
            name = node.strip("_") if node.startswith("__") else node
            label = Label(
                text=name, font_size="11sp", size=(NODE_W, NODE_H), size_hint=(None, None)
            )
            self._labels[node] = label
            self.add_widget(label)
        self.redraw()

    def redraw(self, *_: Any) -> None:
        self.canvas.before.clear()
        if not self.nodes:
            return
        rows = layers(self.nodes, self.edges)
        step_y = self.height / max(1, len(rows))
        self.centers = {}
        for r, row in enumerate(rows):
            step_x = self.width / max(1, len(row))
            for i, node in enumerate(row):
                self.centers[node] = (
                    self.x + step_x * (i + 0.5),
                    self.top - step_y * (r + 0.5),
                )
        with self.canvas.before:
            Color(0.55, 0.6, 0.68, 0.8)
            for edge in self.edges:
                if edge.source in self.centers and edge.target in self.centers:
                    (x1, y1), (x2, y2) = self.centers[edge.source], self.centers[edge.target]
                    Line(
                        points=[x1, y1 - NODE_H / 2, x2, y2 + NODE_H / 2],
                        width=1,
                        dash_length=4 if edge.conditional else 1,
                        dash_offset=3 if edge.conditional else 0,
                    )
            for node, (cx, cy) in self.centers.items():
                colour = NEXT if node == self.upcoming else RAN if node == self.current else IDLE
                Color(*colour, 1)
                RoundedRectangle(
                    pos=(cx - NODE_W / 2, cy - NODE_H / 2), size=(NODE_W, NODE_H), radius=[6]
                )
                if node in self.breakpoints:
                    Color(*BREAK, 1)
                    Ellipse(pos=(cx - NODE_W / 2 - 4, cy + NODE_H / 2 - 8), size=(9, 9))
        for node, label in self._labels.items():
            if node in self.centers:
                label.center = self.centers[node]
