"""The dashboard's stylesheet, inlined in the page (no external assets)."""

CSS = """
:root { --ink:#111827; --muted:#6b7280; --line:#e5e7eb; --bg:#f6f7f9; --card:#fff;
  --good:#15803d; --good-bg:#dcfce7; --bad:#b91c1c; --bad-bg:#fee2e2; --warn:#b45309;
  --warn-bg:#fef3c7; --accent:#2563eb; }
* { box-sizing: border-box; }
body { margin:0; background:var(--bg); color:var(--ink);
  font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial,
  sans-serif; }
header { display:flex; flex-wrap:wrap; align-items:center; gap:6px 16px; padding:14px 28px;
  background:#111827; color:#fff; }
header h1 { font-size:18px; margin:0; font-weight:650; letter-spacing:.2px; }
header .sub { color:#9ca3af; font-size:13px; }
header nav { margin-left:auto; display:flex; gap:6px; align-items:center; order:2; }
header nav a { color:#d1d5db; text-decoration:none; padding:4px 10px; border-radius:6px;
  font-size:13px; }
header nav a.on { background:#374151; color:#fff; }
main { padding:20px 28px 40px; max-width:1400px; margin:0 auto; }
h2 { font-size:15px; margin:28px 0 10px; color:#374151; font-weight:650; }
.hero { display:flex; flex-wrap:wrap; align-items:baseline; gap:4px 22px; background:var(--card);
  border:1px solid var(--line); border-radius:12px; padding:18px 22px; margin-bottom:14px; }
.hero .label { flex-basis:100%; color:var(--muted); font-size:12px; text-transform:uppercase;
  letter-spacing:.6px; font-weight:600; }
.hero .value { font-size:52px; font-weight:750; letter-spacing:-1px; line-height:1.1;
  font-variant-numeric: tabular-nums; }
.hero .value.good { color:var(--good); } .hero .value.bad { color:var(--bad); }
.hero .share { font-size:20px; color:#374151; }
.hero .note { flex-basis:100%; color:var(--muted); font-size:12.5px; }
.tiles { display:grid; grid-template-columns:repeat(4, minmax(0, 1fr)); gap:14px; }
.tile { background:var(--card); border:1px solid var(--line); border-radius:12px;
  padding:16px 18px; }
.tile .label { color:var(--muted); font-size:12px; text-transform:uppercase;
  letter-spacing:.6px; font-weight:600; }
.tile .value { font-size:36px; font-weight:700; margin-top:4px; letter-spacing:-.5px;
  font-variant-numeric: tabular-nums; }
.tile .value.good { color:var(--good); } .tile .value.bad { color:var(--bad); }
.tile .note { color:var(--muted); font-size:12.5px; margin-top:4px; }
.strip { display:flex; flex-wrap:wrap; gap:10px 28px; margin-top:14px; padding:10px 18px;
  background:var(--card); border:1px solid var(--line); border-radius:12px; font-size:13px; }
.strip b { font-variant-numeric: tabular-nums; }
.strip span { color:var(--muted); }
.grid2 { display:grid; grid-template-columns:repeat(2, minmax(0, 1fr)); gap:14px; }
.panel { background:var(--card); border:1px solid var(--line); border-radius:12px;
  padding:14px 16px; min-width:0; }
.panel h3 { margin:0 0 6px; font-size:14px; font-weight:650; }
.legend { display:flex; flex-wrap:wrap; gap:4px 14px; font-size:12.5px; color:#374151;
  margin-bottom:4px; }
.legend i { display:inline-block; width:10px; height:10px; border-radius:3px;
  margin-right:5px; vertical-align:-1px; }
.empty { color:var(--muted); padding:28px 0; text-align:center; }
.pill { display:inline-block; padding:1px 9px; border-radius:999px; font-size:12px;
  font-weight:600; white-space:nowrap; }
.pill.good { background:var(--good-bg); color:var(--good); }
.pill.bad { background:var(--bad-bg); color:var(--bad); }
.pill.warn { background:var(--warn-bg); color:var(--warn); }
.pill.idle { background:#f3f4f6; color:#4b5563; }
.cards { display:grid; grid-template-columns:repeat(2, minmax(0, 1fr)); gap:14px; }
.card { background:var(--card); border:1px solid var(--line); border-radius:12px;
  padding:14px 16px; min-width:0; overflow-wrap:anywhere; }
svg.bullet { max-width:100%; height:auto; vertical-align:middle; }
.card .top { display:flex; align-items:center; gap:10px; flex-wrap:wrap; }
.card .task { font-size:16px; font-weight:700; }
.card .ver { color:var(--muted); font-family: ui-monospace, SFMono-Regular, Menlo, monospace;
  font-size:12.5px; }
.card .right { margin-left:auto; }
.kv { display:grid; grid-template-columns:130px minmax(0, 1fr); gap:4px 12px; margin-top:10px;
  font-size:13px; align-items:center; }
.kv > span:nth-child(odd) { color:var(--muted); }
.gates { display:flex; flex-wrap:wrap; gap:6px; margin-top:10px; }
.gate { font-size:12px; border-radius:6px; padding:2px 8px; border:1px solid; }
.gate.pass { color:var(--good); border-color:#86efac; background:#f0fdf4; }
.gate.fail { color:var(--bad); border-color:#fca5a5; background:#fef2f2; }
.history { margin:10px 0 0; padding:0; list-style:none; font-size:12.5px; color:#374151; }
.history li { padding:2px 0; border-top:1px dashed var(--line); }
.history time { color:var(--muted); margin-right:8px; font-variant-numeric: tabular-nums; }
button.rollback { background:#fff; color:var(--bad); border:1px solid #fca5a5;
  border-radius:8px; padding:5px 12px; font-weight:600; cursor:pointer; font-size:12.5px; }
button.rollback:hover { background:var(--bad-bg); }
button.rollback:disabled { opacity:.5; cursor:default; }
table { width:100%; border-collapse:collapse; font-size:13px; }
th { text-align:left; color:var(--muted); font-weight:600; font-size:12px;
  border-bottom:1px solid var(--line); padding:6px 8px; }
td { padding:6px 8px; border-bottom:1px solid #f1f2f4; font-variant-numeric: tabular-nums; }
td.num, th.num { text-align:right; }
.mono { font-family: ui-monospace, SFMono-Regular, Menlo, monospace; font-size:12.5px; }
.muted { color:var(--muted); }
.nowrap { white-space:nowrap; }
footer { color:var(--muted); font-size:12px; margin-top:26px; }
footer .defs { display:grid; grid-template-columns:max-content minmax(0, 1fr); gap:2px 12px;
  margin:8px 0; }
footer .defs dt { font-weight:600; color:#374151; } footer .defs dd { margin:0; }
.login { max-width:380px; margin:12vh auto; background:#fff; border:1px solid var(--line);
  border-radius:12px; padding:24px; }
.login input { width:100%; padding:8px 10px; border:1px solid #d1d5db; border-radius:8px;
  font-size:14px; margin:10px 0; }
.login button { background:var(--accent); color:#fff; border:0; border-radius:8px;
  padding:8px 16px; font-weight:600; cursor:pointer; }
.error { color:var(--bad); }
@media (max-width: 1000px) { .tiles { grid-template-columns:repeat(2, minmax(0, 1fr)); }
  .grid2, .cards { grid-template-columns:minmax(0, 1fr); } }
svg.chart.narrow { display:none; }
@media (max-width: 600px) {
  svg.chart.wide { display:none; } svg.chart.narrow { display:block; }
  header { padding:10px 14px; }
  header .sub { order:3; flex-basis:100%; font-size:12px; }
  header nav a { padding:4px 8px; }
  main { padding:14px 12px 32px; }
  .hero { padding:14px 16px; } .hero .value { font-size:40px; } .hero .share { font-size:16px; }
  .tiles { gap:10px; } .tile { padding:12px; } .tile .value { font-size:26px; }
  .strip { gap:6px 18px; padding:10px 14px; }
  .kv { grid-template-columns:96px minmax(0, 1fr); }
  .panel { padding:12px; overflow-wrap:anywhere; }
  table.rt thead { display:none; }
  table.rt tr { display:block; padding:6px 0; border-bottom:1px solid var(--line); }
  table.rt td { display:flex; justify-content:space-between; gap:12px; padding:2px 0;
    border:0; text-align:right; white-space:normal; }
  table.rt td::before { content:attr(data-label); color:var(--muted); text-align:left;
    flex-shrink:0; }
  footer .defs { grid-template-columns:minmax(0, 1fr); } footer .defs dd { margin-bottom:4px; }
}
"""
