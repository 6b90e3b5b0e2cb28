// The console's only script of its own (served from /static, so the Content-Security-Policy allows it):
// times in the browser's time zone, and that zone told to the server for "today" and the date filters.
(function () {
  "use strict";

  var zone = "UTC";
  try {
    zone = Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC";
  } catch (e) {
    zone = "UTC";
  }
  var hadZone = document.cookie.split("; ").some(function (c) { return c === "tz=" + encodeURIComponent(zone); });
  document.cookie = "tz=" + encodeURIComponent(zone) + "; path=/; max-age=31536000; SameSite=Lax";

  var format = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "medium" });

  function localTimes(root) {
    var times = root.querySelectorAll("time[datetime]");
    for (var i = 0; i < times.length; i++) {
      var moment = new Date(times[i].getAttribute("datetime"));
      if (!isNaN(moment.getTime())) {
        times[i].title = times[i].getAttribute("datetime");
        times[i].textContent = format.format(moment);
      }
    }
  }

  document.addEventListener("DOMContentLoaded", function () {
    // A page that counted "today" in another zone (the first visit, before the cookie) is counted again.
    var counted = document.querySelector("[data-zone]");
    if (!hadZone && counted && counted.getAttribute("data-zone") !== zone) {
      window.location.reload();
      return;
    }
    localTimes(document);
  });
  document.addEventListener("htmx:afterSettle", function (event) { localTimes(event.target); });
})();
