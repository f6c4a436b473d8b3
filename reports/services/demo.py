"""Demo data: a small shop (customers, orders, refunds) and reports over it.

Everything is created only if missing, so seeding twice changes nothing.
"""

import random
import secrets
from datetime import timedelta

from django.contrib.auth import get_user_model
from django.utils import timezone

from datasources.registry import DEFAULT_SOURCE, source_for
from reports.models import AlertCondition, Report
from reports.services.demo_source import demo_source_writer
from reports.services.schedules import upcoming_fire

CUSTOMER_COUNT = 400
ORDER_COUNT = 4000
HISTORY_DAYS = 90
COUNTRIES = ["DE", "FR", "NL", "GB", "US", "CA", "ES", "IT", "PL", "SE"]
CURRENCY_BY_COUNTRY = {"GB": "GBP", "US": "USD", "CA": "CAD", "PL": "PLN", "SE": "SEK"}
FIRST_NAMES = [
    "Ada",
    "Grace",
    "Linus",
    "Margaret",
    "Ken",
    "Barbara",
    "Dennis",
    "Frances",
    "Guido",
    "Radia",
    "Tim",
    "Sophie",
    "Yukihiro",
    "Anita",
    "Bjarne",
    "Hedy",
]
LAST_NAMES = [
    "Lovelace",
    "Hopper",
    "Torvalds",
    "Hamilton",
    "Thompson",
    "Liskov",
    "Ritchie",
    "Allen",
    "van Rossum",
    "Perlman",
    "Berners-Lee",
    "Wilson",
    "Matsumoto",
    "Borg",
]

# slug -> (name, schedule, timezone, description); the SQL, in the demo source's dialect,
# is its backend's (datasources.backends.base.DemoSource.queries).
DEMO_REPORTS = {
    "daily-revenue": (
        "Daily revenue",
        "0 6 * * *",
        "Europe/Berlin",
        "Orders and revenue per currency over the run's data interval (the day before the "
        "06:00 run, in Berlin time), for one order status and a minimum amount. Run it with "
        "other values from “Run with parameters…”, or fill past days with “Backfill…”.",
    ),
    "daily-revenue-by-currency": (
        "Daily revenue by currency",
        "0 6 * * *",
        "UTC",
        "Paid orders and revenue per day and currency over the last 30 days.",
    ),
    "top-customers-this-week": (
        "Top customers this week",
        "0 7 * * mon",
        "Europe/Berlin",
        "The 20 customers with the highest paid order value in the last 7 days.",
    ),
    "refunds-yesterday": (
        "Refunds yesterday",
        "30 6 * * *",
        "UTC",
        "Every order refunded yesterday (UTC), with its customer.",
    ),
    "new-customers-by-country": (
        "New customers by country",
        "0 8 1 * *",
        "Europe/Berlin",
        "Sign-ups per country over the last 90 days; runs on the first of each month.",
    ),
}


def _demo_rows(now, timestamp, seed=2026):
    generator = random.Random(seed)
    customers, orders = [], []
    for customer_id in range(1, CUSTOMER_COUNT + 1):
        first, last = generator.choice(FIRST_NAMES), generator.choice(LAST_NAMES)
        email = f"{first}.{last}.{customer_id}@example.com".lower().replace(" ", "")
        signed_up = now - timedelta(days=generator.uniform(0, HISTORY_DAYS * 2))
        customers.append(
            (customer_id, f"{first} {last}", email, generator.choice(COUNTRIES), signed_up)
        )
    for order_id in range(1, ORDER_COUNT + 1):
        customer = generator.choice(customers)
        ordered_at = now - timedelta(days=generator.uniform(0, HISTORY_DAYS))
        refunded = generator.random() < 0.06
        refunded_at = ordered_at + timedelta(hours=generator.uniform(1, 72)) if refunded else None
        if refunded_at and refunded_at > now:
            refunded_at = now
        orders.append(
            (
                order_id,
                customer[0],
                timestamp(ordered_at),
                CURRENCY_BY_COUNTRY.get(customer[3], "EUR"),
                generator.randint(500, 25000),
                "refunded" if refunded else "paid",
                timestamp(refunded_at) if refunded_at else None,
            )
        )
    customers = [(*row[:4], timestamp(row[4])) for row in customers]
    return customers, orders


def seed_demo_data(now=None):
    """Create the demo tables in the built-in demo source; True if they were filled now."""
    demo = source_for(DEFAULT_SOURCE).backend.demo
    with demo_source_writer() as cursor:
        for statement in demo.tables:
            cursor.execute(statement)
        cursor.execute("SELECT count(*) FROM demo_customers")
        if cursor.fetchone()[0]:
            return False
        customers, orders = _demo_rows(now or timezone.now(), demo.timestamp)
        cursor.executemany("INSERT INTO demo_customers VALUES (%s, %s, %s, %s, %s)", customers)
        cursor.executemany("INSERT INTO demo_orders VALUES (%s, %s, %s, %s, %s, %s, %s)", orders)
    return True


DEMO_PARAMETERS = {
    "daily-revenue": [
        {"name": "day", "type": "date", "label": "Day", "default": "interval_start"},
        {
            "name": "status",
            "type": "choice",
            "label": "Order status",
            "choices": ["paid", "refunded"],
            "default": "paid",
        },
        {
            "name": "min_amount_cents",
            "type": "integer",
            "label": "Smallest order (cents)",
            "default": "0",
        },
    ],
}

# Refunds yesterday alerts ops when there are any (the console prints the mail).
DEMO_NOTIFICATIONS = {
    "refunds-yesterday": {
        "notify_emails": "ops@example.com",
        "alert_condition": AlertCondition.HAS_ROWS,
    },
}


def seed_demo_reports():
    """Create the demo reports that do not exist yet; return the slugs created."""
    queries = source_for(DEFAULT_SOURCE).backend.demo.queries
    created = []
    for slug, (name, schedule, zone, description) in DEMO_REPORTS.items():
        _, was_created = Report.objects.get_or_create(
            slug=slug,
            defaults={
                "name": name,
                "schedule": schedule,
                "timezone": zone,
                "next_run_at": upcoming_fire(schedule, zone),
                "description": description,
                "sql": queries[slug],
                "parameters": DEMO_PARAMETERS.get(slug, []),
                **DEMO_NOTIFICATIONS.get(slug, {}),
            },
        )
        if was_created:
            created.append(slug)
    return created


def ensure_demo_admin(username="admin"):
    """Create a superuser when there is none; return its new password, else None."""
    user_model = get_user_model()
    if user_model.objects.filter(is_superuser=True).exists():
        return None
    password = secrets.token_urlsafe(12)
    user_model.objects.create_superuser(username, f"{username}@example.com", password)
    return password
