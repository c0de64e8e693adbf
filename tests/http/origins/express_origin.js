// A real Express origin for blockd's hostile proxy tests: serves ROOT statically, as
// express.static does, and the same files through a WHATWG URL router, as many Node apps do
// (new URL() reads "\" as "/" and drops "#..."). Prints its port, then one line per request.
"use strict";
const express = require("express");
const fs = require("fs");
const path = require("path");

const root = process.argv[2];
const app = express();
app.use((req, res, next) => {
  process.stdout.write(JSON.stringify({ method: req.method, url: req.url }) + "\n");
  next();
});
app.use((req, res, next) => {
  const pathname = decodeURIComponent(new URL(req.url, "http://origin").pathname);
  const file = path.join(root, path.normalize(pathname));
  if (!file.startsWith(root) || !fs.existsSync(file) || !fs.statSync(file).isFile()) {
    return next();
  }
  res.type("html").send(fs.readFileSync(file));
});
app.use(express.static(root));
app.post("/echo", express.text({ type: "*/*" }), (req, res) => res.send("echo:" + req.body));
const server = app.listen(0, "127.0.0.1", () => {
  process.stdout.write(JSON.stringify({ port: server.address().port }) + "\n");
});
