"""The outbox and the leases, moved from factory_bridge with their tables: state only, the
tables and their rows stay as they are."""

import uuid

import django.utils.timezone
from django.db import migrations, models


class Migration(migrations.Migration):
    initial = True

    # The tables exist from factory_bridge's migrations; factory_bridge 0012 drops them from
    # its own state once this has taken them.
    dependencies = [
        ("factory_bridge", "0011_dlq_jobs_order_tally"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name='WorkerLease',
                    fields=[
                        ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                        ('name', models.CharField(max_length=40, unique=True)),
                        ('owner', models.CharField(blank=True, max_length=64)),
                        ('heartbeat_at', models.DateTimeField(blank=True, null=True)),
                        ('started_at', models.DateTimeField(blank=True, null=True)),
                    ],
                    options={
                        'db_table': 'factory_bridge_workerlease',
                    },
                ),
                migrations.CreateModel(
                    name='OutboxEvent',
                    fields=[
                        ('id', models.UUIDField(default=uuid.uuid4, editable=False, primary_key=True, serialize=False)),
                        ('topic', models.CharField(choices=[('stock', 'Stock events'), ('sales', 'Sales events')], max_length=16)),
                        ('event_type', models.CharField(db_index=True, max_length=32)),
                        ('subject', models.CharField(blank=True, max_length=100)),
                        ('body', models.JSONField()),
                        ('attributes', models.JSONField(help_text='SNS message attributes, all non-empty strings')),
                        ('sku', models.CharField(db_index=True, max_length=32)),
                        ('created_at', models.DateTimeField(db_index=True, default=django.utils.timezone.now)),
                        ('published_at', models.DateTimeField(blank=True, null=True)),
                        ('next_attempt_at', models.DateTimeField(default=django.utils.timezone.now)),
                        ('attempts', models.PositiveIntegerField(default=0)),
                        ('last_error', models.TextField(blank=True)),
                        ('dead_at', models.DateTimeField(blank=True, null=True)),
                    ],
                    options={
                        'db_table': 'factory_bridge_outboxevent',
                        'ordering': ['-created_at'],
                        'permissions': [('retry_outboxevent', 'Can retry dead outbox events')],
                        'indexes': [models.Index(fields=['published_at', 'dead_at', 'next_attempt_at'], name='outbox_due')],
                    },
                ),
            ],
            database_operations=[],
        ),
    ]
