-- 0005: peer wake-ups. Where an instance's watcher listens for "I committed, read now" datagrams (a loopback
-- UDP address such as 127.0.0.1:40123), or NULL when it does not listen (--peer-wakeup false).
ALTER TABLE instances ADD COLUMN wake_addr TEXT;
