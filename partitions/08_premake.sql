-- A fresh install has the current month and the next three; the worker keeps them ahead from then on.
select audit.ensure_partitions(3);
