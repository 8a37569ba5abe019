// The leaderboard page's behaviour (harness/report/page.py writes it once beside the pages, results/page.js): sort a
// table by any column, filter every table by method family and NFE. Plain JavaScript on purpose: the page must open
// from file:// with no server and no network, and two features of a few hundred rows do not need a table library (a
// vendored one would add 100 KB or more, a licence to carry and a copy to keep up to date).
// With ?selftest in the URL the page also checks itself (sorting, filters, images) and writes what it saw as JSON
// into <pre id="selftest">, which tests/test_page.py reads through headless Chromium's --dump-dom.
(function () {
  "use strict";
  var SELFTEST = /(^|&)selftest(=|&|$)/.test(window.location.search.slice(1));
  var errors = [];
  if (SELFTEST) {
    window.addEventListener("error", function (event) { errors.push(String(event.message || event.type)); }, true);
    ["error", "warn"].forEach(function (level) {
      var original = console[level];
      console[level] = function () {
        errors.push(level + ": " + Array.prototype.join.call(arguments, " "));
        original.apply(console, arguments);
      };
    });
  }

  function boards() { return Array.prototype.slice.call(document.querySelectorAll("section.board")); }
  function bodyRows(table) { return Array.prototype.slice.call(table.tBodies[0].rows); }
  function cellValue(row, column) {
    var cell = row.querySelector('td[data-col="' + column + '"]');
    return cell ? cell.getAttribute("data-value") : "";
  }

  // Empty cells (no value, a diverged run) go last in either direction; text compares with numbers inside it.
  function order(a, b, numeric, direction) {
    if (a === "" || b === "") { return (a === "" ? 1 : 0) - (b === "" ? 1 : 0); }
    var difference = numeric ? parseFloat(a) - parseFloat(b) : a.localeCompare(b, undefined, {numeric: true});
    return direction === "ascending" ? difference : -difference;
  }

  function sortTable(table, column, direction) {
    var header = table.querySelector('th[data-col="' + column + '"]');
    var numeric = header.getAttribute("data-type") === "num";
    var body = table.tBodies[0];
    var rows = bodyRows(table).map(function (row, index) { return {row: row, index: index}; });
    rows.sort(function (x, y) {
      return order(cellValue(x.row, column), cellValue(y.row, column), numeric, direction) || x.index - y.index;
    });
    rows.forEach(function (item) { body.appendChild(item.row); });
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (cell) {
      cell.setAttribute("aria-sort", cell === header ? direction : "none");
    });
  }

  function onHeaderClick(event) {
    var header = event.target.closest("th");
    var next = header.getAttribute("aria-sort") === "ascending" ? "descending" : "ascending";
    sortTable(header.closest("table"), header.getAttribute("data-col"), next);
  }

  function applyFilters() {
    var family = document.getElementById("family-filter").value;
    var nfe = document.getElementById("nfe-filter").value;
    boards().forEach(function (board) {
      var shown = 0;
      bodyRows(board.querySelector("table")).forEach(function (row) {
        var keep = (family === "" || row.getAttribute("data-family") === family) &&
                   (nfe === "" || row.getAttribute("data-nfe") === nfe);
        row.hidden = !keep;
        shown += keep ? 1 : 0;
      });
      board.querySelector(".shown").textContent = String(shown);
    });
  }

  function visibleRows() {
    var rows = [];
    boards().forEach(function (board) {
      bodyRows(board.querySelector("table")).forEach(function (row) { if (!row.hidden) { rows.push(row); } });
    });
    return rows;
  }

  // Each option of a filter in turn: how many rows stay, and which families and NFEs they have.
  function tryFilter(id) {
    var select = document.getElementById(id);
    var seen = {};
    Array.prototype.forEach.call(select.options, function (option) {
      select.value = option.value;
      select.dispatchEvent(new Event("change"));
      var rows = visibleRows();
      seen[option.value] = {
        shown: rows.length,
        families: rows.map(function (row) { return row.getAttribute("data-family"); }),
        nfes: rows.map(function (row) { return row.getAttribute("data-nfe"); })
      };
    });
    select.value = "";
    select.dispatchEvent(new Event("change"));
    return seen;
  }

  // Sort each table by its metric, both ways, through the header's button as a reader would.
  function trySorting() {
    return boards().map(function (board) {
      var table = board.querySelector("table");
      var button = table.querySelector('th[data-col="value"] button');
      var result = {dataset: board.getAttribute("data-dataset"), metric: board.getAttribute("data-metric")};
      ["ascending", "descending"].forEach(function (direction) {
        button.click();
        result[direction] = bodyRows(table).map(function (row) { return cellValue(row, "value"); });
        result[direction + "_marked"] = button.closest("th").getAttribute("aria-sort") === direction;
      });
      return result;
    });
  }

  function runSelftest() {
    var images = Array.prototype.map.call(document.images, function (image) {
      return {src: image.getAttribute("src"), complete: image.complete, naturalWidth: image.naturalWidth};
    });
    var result = {images: images, sorting: trySorting(), family: tryFilter("family-filter"),
                  nfe: tryFilter("nfe-filter")};
    result.errors = errors;
    var out = document.getElementById("selftest");
    out.textContent = JSON.stringify(result);
    out.setAttribute("data-done", "true");
  }

  Array.prototype.forEach.call(document.querySelectorAll("section.board th[data-col] button"), function (button) {
    button.addEventListener("click", onHeaderClick);
  });
  ["family-filter", "nfe-filter"].forEach(function (id) {
    document.getElementById(id).addEventListener("change", applyFilters);
  });
  applyFilters();
  if (SELFTEST) {
    if (document.readyState === "complete") { runSelftest(); } else { window.addEventListener("load", runSelftest); }
  }
}());
