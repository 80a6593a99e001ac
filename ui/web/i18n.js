// i18n.js: the admin UI's strings in English and Simplified Chinese, chosen by browser language.
"use strict";
const GT_STRINGS = {
  en: {
    skip: "Skip to content", overview: "Overview", config: "Configuration", users: "Users",
    services: "Services", connections: "Connections", traffic: "Traffic", logs: "Logs",
    account: "Account", logout: "Log out", login: "Log in", username: "User name",
    password: "Password", options: "Options", add: "Add", validate: "Check",
    saveApply: "Save and apply", id: "ID", connected: "Connected", limits: "Limits",
    actions: "Actions", addUser: "Add a user", secret: "Secret", save: "Save",
    addService: "Add a service", tunnels: "Tunnels", streams: "Streams", who: "Client",
    remote: "Remote", service: "Service", age: "Age", bytesIn: "In", bytesOut: "Out",
    newPassword: "New password", remove: "Remove", disconnect: "Disconnect", yes: "yes", no: "no",
    version: "Version", uptime: "Uptime", running: "Relay running", listeners: "Listeners",
    configFile: "Configuration file", saved: "Saved and applied.", valid: "The configuration is valid.",
    invalid: "The configuration has errors.", wrongLogin: "Wrong user name, password or link.",
    tooMany: "Too many failed logins: wait a minute.", unchanged: "(unchanged)",
    setPassword: "No admin password is set yet: set one on the Account page.",
    passwordSaved: "Password saved; other sessions were ended.", notRunning: "not running",
  },
  zh: {
    skip: "跳到内容", overview: "概览", config: "配置", users: "用户", services: "服务",
    connections: "连接", traffic: "流量", logs: "日志", account: "账户", logout: "退出",
    login: "登录", username: "用户名", password: "密码", options: "选项", add: "添加",
    validate: "检查", saveApply: "保存并应用", id: "ID", connected: "已连接", limits: "限制",
    actions: "操作", addUser: "添加用户", secret: "密钥", save: "保存", addService: "添加服务",
    tunnels: "隧道", streams: "流", who: "客户端", remote: "远端", service: "服务", age: "时长",
    bytesIn: "入", bytesOut: "出", newPassword: "新密码", remove: "删除", disconnect: "断开",
    yes: "是", no: "否", version: "版本", uptime: "运行时间", running: "中继运行中",
    listeners: "监听", configFile: "配置文件", saved: "已保存并应用。", valid: "配置有效。",
    invalid: "配置有错误。", wrongLogin: "用户名、密码或链接错误。",
    tooMany: "登录失败次数过多：请稍候一分钟。", unchanged: "（不变）",
    setPassword: "尚未设置管理员密码：请在账户页面设置。",
    passwordSaved: "密码已保存；其他会话已结束。", notRunning: "未运行",
  },
};
const GT_LANG = (navigator.languages || [navigator.language || "en"]).some(
  (l) => l.toLowerCase().startsWith("zh")) ? "zh" : "en";
function t(key) {
  return (GT_STRINGS[GT_LANG] && GT_STRINGS[GT_LANG][key]) || GT_STRINGS.en[key] || key;
}
