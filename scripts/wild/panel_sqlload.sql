-- The wild panel's sqlite3 workload (CPU-bound, in memory): recursive CTEs, inserts,
-- an index, joins, GROUP BY / ORDER BY, LIKE, printf and string functions.
--     sqlite3 :memory: ".read scripts/wild/panel_sqlload.sql"
-- 400 rounds of a few hundred ms each (about 80 s in all on the development VM).
CREATE TABLE item(id INTEGER PRIMARY KEY, name TEXT, grp INTEGER, score REAL);
CREATE TABLE tag(item_id INTEGER, tag TEXT);
WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < 200000)
INSERT INTO item SELECT x, printf('item_%d_%s', x, hex(x * 7919)), x % 97,
                        (x * 2654435761 % 10007) / 7.0 FROM n;
INSERT INTO tag SELECT id, substr(name, 6, 3) FROM item WHERE id % 3 = 0;
CREATE INDEX tag_by_item ON tag(item_id);
CREATE TABLE rounds(r INTEGER);
WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < 400)
INSERT INTO rounds SELECT x FROM n;
-- one row per round; every round re-runs the heavy queries through correlated subqueries
SELECT r,
  (SELECT count(*) FROM item i JOIN tag t ON t.item_id = i.id
     WHERE i.name LIKE '%' || (r % 10) || '_%' AND i.grp > r % 50),
  (SELECT max(s) FROM (SELECT grp, sum(score) AS s FROM item
     WHERE id % 400 != r GROUP BY grp ORDER BY s DESC LIMIT 5)),
  (SELECT length(group_concat(name, ',')) FROM (SELECT upper(name) AS name FROM item
     WHERE id BETWEEN r * 100 AND r * 100 + 50 ORDER BY replace(name, '_', '') DESC)),
  (SELECT count(DISTINCT substr(name, 1 + r % 4, 4)) FROM item WHERE id % 5 = r % 5)
FROM rounds;
