"""The dashboard's panels: each selector's series drawn as a chart with its caption."""

from dataclasses import dataclass

from nudged.ops.dashboard import charts, selectors
from nudged.ops.dashboard.charts import Chart, Series
from nudged.ops.dashboard.selectors import Window

SERVED, REFUSED, LIMITED = "#009E73", "#D55E00", "#E69F00"
WORST, MEAN = "#D55E00", "#0072B2"


@dataclass
class Panel:
    key: str
    title: str
    caption: str
    chart: Chart


@dataclass
class Dashboard:
    window: Window
    panels: list[Panel]
    # Figures over the whole window, shown above the charts.
    served: int
    units: int
    refused: int
    sold_out_now: list[str]
    pre_orders: selectors.PreOrders


def dashboard(window: Window) -> Dashboard:
    """Every panel of the dashboard over `window`."""
    minutes = window.bucket_seconds // 60
    per = "per minute" if minutes == 1 else f"per minute ({minutes}-minute average)"
    rates = selectors.order_rates(window)
    stock = selectors.stock(window)
    colors = {p.sku: charts.color(i) for i, p in enumerate(stock)}
    restocks = selectors.restock_lead_times(window)
    lag = selectors.relay_lag(window)
    depth = selectors.dlq_depth(window)
    panels = [
        Panel(
            "orders",
            "Orders served and refused",
            f"Orders {per}: served, refused because the donut was sold out (or short), and "
            "refused by the purchase limit.",
            charts.line_chart(
                window,
                [
                    Series("served", SERVED, rates.served),
                    Series("refused: out of stock", REFUSED, rates.refused),
                    Series("refused: purchase limit", LIMITED, rates.limited),
                ],
                title=f"Orders {per}",
                y_label="orders / min",
            ),
        ),
        Panel(
            "stock",
            "Stock per product",
            "Units on hand at the end of each "
            + ("minute." if minutes == 1 else f"{minutes} minutes."),
            charts.line_chart(
                window,
                [Series(f"{p.sku} {p.name}", colors[p.sku], list(p.values)) for p in stock],
                title="Stock on hand per product",
                y_label="units",
                step=True,
                whole=True,
            ),
        ),
        Panel(
            "sold-out",
            "Sold-out periods",
            "When each product stood at zero, from the order that took the last one to the "
            "arrival (or count) that refilled it.",
            charts.timeline_chart(
                window,
                [(p.sku, colors[p.sku], p.sold_out) for p in stock],
                title="Sold-out periods per product",
            ),
        ),
        Panel(
            "restocks",
            "Restock lead times",
            "One dot per restock that arrived: seconds from the reorder decision to the "
            "factory's callback.",
            charts.scatter_chart(
                window,
                [(r.sku, r.arrived_at, r.lead_seconds) for r in restocks],
                colors,
                title="Restock lead times",
                y_label="seconds",
            ),
        ),
        Panel(
            "relay-lag",
            "Outbox relay lag",
            "Seconds from an event's commit (or a sale's order) to its publication to SNS, "
            "by minute of publication: the worst and the mean.",
            charts.line_chart(
                window,
                [Series("worst", WORST, lag.worst), Series("mean", MEAN, lag.mean)],
                title="Outbox relay lag",
                y_label="seconds",
            ),
        ),
        Panel(
            "dlq",
            "Dead-letter queue depth",
            "Messages waiting in each dead-letter queue for staff to redrive or discard them.",
            charts.line_chart(
                window,
                [
                    Series(queue, charts.color(i + 3), [float(v) for v in values])
                    for i, (queue, values) in enumerate(depth.items())
                ],
                title="Dead-letter queue depth",
                y_label="messages",
                step=True,
                whole=True,
            ),
        ),
    ]
    return Dashboard(
        window=window,
        panels=panels,
        served=round(sum(rates.served) * minutes),
        units=round(sum(rates.units) * minutes),
        refused=round((sum(rates.refused) + sum(rates.limited)) * minutes),
        sold_out_now=[p.sku for p in stock if p.values and p.values[-1] == 0],
        pre_orders=selectors.pre_orders(window),
    )
