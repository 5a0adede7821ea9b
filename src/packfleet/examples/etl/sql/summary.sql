-- Revenue per region from the `orders` table that the `load` package fills.
DROP TABLE IF EXISTS region_summary;

CREATE TABLE region_summary (
    region  TEXT PRIMARY KEY,
    orders  INTEGER NOT NULL,
    revenue REAL NOT NULL
);

INSERT INTO region_summary (region, orders, revenue)
SELECT region, COUNT(*), ROUND(SUM(amount), 2)
FROM orders
GROUP BY region;

SELECT region, orders, revenue FROM region_summary ORDER BY revenue DESC;
