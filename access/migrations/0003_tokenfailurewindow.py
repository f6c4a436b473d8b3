from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('access', '0002_hash_plain_tokens'),
    ]

    operations = [
        migrations.CreateModel(
            name='TokenFailureWindow',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('address', models.CharField(max_length=45, unique=True)),
                ('failures', models.PositiveIntegerField()),
                ('started_at', models.DateTimeField(db_index=True)),
            ],
            options={
                'verbose_name': 'address sending invalid tokens',
                'verbose_name_plural': 'addresses sending invalid tokens',
            },
        ),
    ]
