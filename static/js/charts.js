/*
 * Draws every chart that templates/partials/_chart.html renders, with the
 * vendored Chart.js (static/vendor/chart.umd.min.js): axis titles with units,
 * hover values, points on short series (so a one-point series shows).
 * The data format is documented in core/charts.py.
 *
 * A container with data-chart-feed="<url>" data-chart-after="<row id>" and
 * data-chart-live polls <url>?after=<id> every 2 s and appends the rows
 * ([id, key, x, y]) to the series with that key; a key no chart has yet gets
 * its own chart in [data-chart-overflow]. Polling stops when the feed says
 * the source is no longer active.
 *
 * Works for htmx-swapped content too (htmx:load), and needs no inline script.
 */
(function () {
  "use strict";

  const COLORS = ["#3056d3", "#d35400", "#2e8b57", "#8e44ad", "#c0392b", "#16a085"];
  const POLL_MS = 2000;
  const MANY_POINTS = 60; // above this a line is drawn without point markers

  function axisTitle(axis) {
    return axis.unit ? axis.label + " (" + axis.unit + ")" : axis.label;
  }

  function formatValue(value) {
    if (typeof value !== "number") return String(value);
    const size = Math.abs(value);
    if (size !== 0 && (size < 1e-3 || size >= 1e6)) return value.toExponential(3);
    return String(Number(value.toPrecision(5)));
  }

  function scale(axis, type) {
    const out = { type: type, title: { display: true, text: axisTitle(axis) } };
    if (axis.min !== undefined) out.min = axis.min;
    if (axis.max !== undefined) out.max = axis.max;
    return out;
  }

  function withUnit(value, axis) {
    return formatValue(value) + (axis.unit ? " " + axis.unit : "");
  }

  // Series with the same label (e.g. "eval" from either of two metric names)
  // share a colour, so train and eval look the same on every chart.
  function colorsByLabel(series) {
    const labels = [];
    series.forEach(function (s) { if (labels.indexOf(s.label) < 0) labels.push(s.label); });
    return function (s) { return COLORS[labels.indexOf(s.label) % COLORS.length]; };
  }

  function lineConfig(spec) {
    const colorOf = colorsByLabel(spec.series);
    const xScale = scale(spec.x, "linear");
    // Steps are whole numbers: no tick at step 0.5.
    const wholeX = spec.series.every(function (s) {
      return s.points.every(function (p) { return Number.isInteger(p[0]); });
    });
    if (wholeX) {
      xScale.ticks = { precision: 0 };
      // One point at step 0 would otherwise get an axis from -1.
      xScale.afterDataLimits = function (axis) { if (axis.min < 0) axis.min = 0; };
    }
    return {
      type: "line",
      data: {
        datasets: spec.series.map(function (s) {
          const color = colorOf(s);
          return {
            label: s.label,
            key: s.key,
            data: s.points.map(function (p) { return { x: p[0], y: p[1] }; }),
            borderColor: color,
            backgroundColor: color,
            borderWidth: 2,
            pointRadius: function (ctx) {
              return ctx.dataset.data.length > MANY_POINTS ? 0 : 3;
            },
            pointHoverRadius: 5,
          };
        }),
      },
      options: {
        aspectRatio: 2,
        interaction: { mode: "nearest", axis: "x", intersect: false },
        scales: { x: xScale, y: scale(spec.y, "linear") },
        plugins: {
          legend: {
            display: spec.series.length > 1,
            labels: {
              // Series the job has not logged (yet) stay out of the legend.
              filter: function (item, data) {
                return data.datasets[item.datasetIndex].data.length > 0;
              },
            },
          },
          tooltip: {
            callbacks: {
              title: function (items) {
                return items.length ? spec.x.label + " " + formatValue(items[0].parsed.x) : "";
              },
              label: function (item) {
                return item.dataset.label + ": " + withUnit(item.parsed.y, spec.y);
              },
            },
          },
        },
      },
    };
  }

  function barConfig(spec) {
    return {
      type: "bar",
      data: {
        labels: spec.series.length ? spec.series[0].points.map(function (p) { return p[0]; }) : [],
        datasets: spec.series.map(function (s, i) {
          return {
            label: s.label,
            key: s.key,
            data: s.points.map(function (p) { return p[1]; }),
            backgroundColor: COLORS[i % COLORS.length],
          };
        }),
      },
      options: {
        aspectRatio: 4,
        scales: { x: scale(spec.x, "category"), y: scale(spec.y, "linear") },
        plugins: {
          legend: { display: spec.series.length > 1 },
          tooltip: {
            callbacks: {
              label: function (item) {
                return item.dataset.label + ": " + withUnit(item.parsed.y, spec.y);
              },
            },
          },
        },
      },
    };
  }

  // Horizontal whiskers (lower..upper) with a dot at the value, one row each.
  function intervalConfig(spec) {
    const s = spec.series[0] || { label: "", key: "", points: [] };
    return {
      type: "bar",
      data: {
        labels: s.points.map(function (p) { return p[0]; }),
        datasets: [
          {
            type: "line",
            label: s.label,
            key: s.key,
            data: s.points.map(function (p) { return p[1]; }),
            showLine: false,
            pointRadius: 5,
            pointHoverRadius: 7,
            borderColor: COLORS[0],
            backgroundColor: COLORS[0],
          },
          {
            label: "95% interval",
            data: s.points.map(function (p) { return [p[2], p[3]]; }),
            backgroundColor: "rgba(48, 86, 211, 0.45)",
            barThickness: 3,
          },
        ],
      },
      options: {
        indexAxis: "y",
        maintainAspectRatio: false,
        interaction: { mode: "index", axis: "y", intersect: false },
        scales: { x: scale(spec.x, "linear"), y: scale(spec.y, "category") },
        plugins: {
          tooltip: {
            callbacks: {
              label: function (item) {
                const raw = item.raw;
                if (Array.isArray(raw)) {
                  return item.dataset.label + ": " + formatValue(raw[0]) + " … " + formatValue(raw[1]);
                }
                return item.dataset.label + ": " + withUnit(raw, spec.x);
              },
            },
          },
        },
      },
    };
  }

  const CONFIGS = { line: lineConfig, bar: barConfig, interval: intervalConfig };

  function draw(figure, spec) {
    const canvas = figure.querySelector("canvas");
    if (!canvas || Chart.getChart(canvas)) return;
    if (!spec) {
      const data = figure.querySelector('script[type="application/json"]');
      if (!data) return;
      spec = JSON.parse(data.textContent);
    }
    const box = canvas.parentElement;
    box.style.position = "relative";
    if (spec.kind === "interval") {
      const rows = spec.series.length ? spec.series[0].points.length : 0;
      box.style.height = 70 + rows * 36 + "px";
    }
    const config = CONFIGS[spec.kind](spec);
    config.options.animation = false;
    config.options.responsive = true;
    new Chart(canvas, config).$arbiterSpec = spec;
  }

  function drawAll(root) {
    if (!root || !root.querySelectorAll) return;
    const figures = Array.from(root.querySelectorAll("figure[data-chart]"));
    if (root.matches && root.matches("figure[data-chart]")) figures.push(root);
    figures.forEach(function (figure) { draw(figure); });
    const feeds = Array.from(root.querySelectorAll("[data-chart-feed][data-chart-live]"));
    if (root.matches && root.matches("[data-chart-feed][data-chart-live]")) feeds.push(root);
    feeds.forEach(startFeed);
  }

  function chartOf(figure) {
    const canvas = figure.querySelector("canvas");
    return canvas ? Chart.getChart(canvas) : undefined;
  }

  function seriesIndex() {
    const index = new Map();
    document.querySelectorAll("figure[data-chart]").forEach(function (figure) {
      const chart = chartOf(figure);
      if (!chart || chart.config.type !== "line") return;
      chart.data.datasets.forEach(function (dataset) {
        index.set(dataset.key, { figure: figure, chart: chart, dataset: dataset });
      });
    });
    return index;
  }

  function addOverflowChart(key, xAxis) {
    const overflow = document.querySelector("[data-chart-overflow]");
    if (!overflow) return undefined;
    const figure = document.createElement("figure");
    figure.className = "card chart";
    figure.dataset.chart = "metric:" + key;
    const caption = document.createElement("figcaption");
    caption.textContent = key;
    const box = document.createElement("div");
    box.className = "chart-canvas";
    const canvas = document.createElement("canvas");
    canvas.setAttribute("role", "img");
    canvas.setAttribute("aria-label", key + " by " + xAxis.label);
    box.appendChild(canvas);
    figure.append(caption, box);
    overflow.appendChild(figure);
    const more = overflow.closest("[data-chart-more]");
    if (more) more.hidden = false;
    draw(figure, {
      id: "metric:" + key,
      title: key,
      kind: "line",
      x: xAxis,
      y: { label: key, unit: "" },
      series: [{ label: key, key: key, points: [] }],
    });
    const chart = chartOf(figure);
    return { figure: figure, chart: chart, dataset: chart.data.datasets[0] };
  }

  function applyRows(rows) {
    if (!rows.length) return;
    const index = seriesIndex();
    const first = index.values().next().value;
    const xAxis = first ? first.chart.$arbiterSpec.x : { label: "step", unit: "" };
    const touched = new Set();
    rows.forEach(function (row) {
      const key = row[1];
      let target = index.get(key);
      if (!target) {
        target = addOverflowChart(key, xAxis);
        if (!target) return;
        index.set(key, target);
      }
      const data = target.dataset.data;
      const point = { x: row[2], y: row[3] };
      if (data.length && data[data.length - 1].x > point.x) {
        data.push(point);
        data.sort(function (a, b) { return a.x - b.x; });
      } else {
        data.push(point);
      }
      touched.add(target);
    });
    touched.forEach(function (target) {
      if (target.figure.hidden) {
        target.figure.hidden = false;
        target.chart.resize();
      }
      target.chart.update("none");
    });
    document.querySelectorAll("[data-chart-empty]").forEach(function (el) { el.hidden = true; });
  }

  function startFeed(container) {
    if (container.dataset.chartPolling) return;
    container.dataset.chartPolling = "1";
    const url = container.dataset.chartFeed;

    function stop() {
      delete container.dataset.chartLive;
      delete container.dataset.chartPolling;
    }

    function later() {
      window.setTimeout(tick, POLL_MS);
    }

    function tick() {
      if (!container.isConnected) return stop();
      const after = container.dataset.chartAfter || "0";
      fetch(url + "?after=" + encodeURIComponent(after), {
        headers: { Accept: "application/json" },
        credentials: "same-origin",
      })
        .then(function (response) {
          // Signed out (sent to the login page) or not allowed: stop asking.
          if (response.redirected || (response.status >= 400 && response.status < 500)) {
            stop();
            return null;
          }
          return response.ok ? response.json() : null;
        })
        .then(function (feed) {
          if (!container.dataset.chartPolling) return;
          if (!feed) return later();
          applyRows(feed.rows);
          container.dataset.chartAfter = String(feed.last_id);
          container.dispatchEvent(
            new CustomEvent("charts:polled", { bubbles: true, detail: feed })
          );
          if (feed.more) tick();
          else if (feed.active) later();
          else stop();
        })
        .catch(later);
    }

    later();
  }

  function init() {
    if (typeof Chart === "undefined") return;
    Chart.defaults.font.family = window.getComputedStyle(document.body).fontFamily;
    drawAll(document);
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", init);
  } else {
    init();
  }
  document.addEventListener("htmx:load", function (event) {
    if (typeof Chart !== "undefined") drawAll(event.detail.elt);
  });
})();
